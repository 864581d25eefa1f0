/* The demo's target tasks: the "glyphs" sources (characters rendered from
 * installed fonts) and class subsets of any source ("fashion-mnist:0,2,4,6",
 * the "fashion-hard" alias).  Glyph tests skip, saying so, when the fonts
 * (Debian fonts-dejavu-core, fonts-liberation2) are not installed. */
#include "testutil.h"
#include "ntc/data.h"
#include "runtime/glyphs.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PIX (NTC_GLYPH_CANVAS * NTC_GLYPH_CANVAS)

static ntc_dataset *open_split(const char *source, ntc_split split, int64_t val_size)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = source;
    o.split = split;
    o.val_size = val_size;
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_open(&o, &err);
    ck_assert_msg(ds != NULL, "%s: %s", source, ntc_err_str(&err));
    return ds;
}

static void open_fails(const char *source, const char *msg)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = source;
    o.split = NTC_SPLIT_TEST;
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_open(&o, &err);
    ck_assert_msg(ds == NULL, "opened '%s', expected '%s'", source, msg);
    ck_assert_msg(strstr(ntc_err_str(&err), msg), "'%s': expected '%s', got '%s'", source, msg,
                  ntc_err_str(&err));
}

static void class_counts(const ntc_dataset *ds, int64_t *count)
{
    memset(count, 0, (size_t)ds->n_classes * sizeof *count);
    for (int64_t i = 0; i < ds->n; i++)
        count[ds->labels[i]]++;
}

/* The fonts, or NULL after saying why the glyph test is skipped. */
static ntc_glyph_fonts *fonts_or_skip(const char *test)
{
    ntc_err err = {0};
    ntc_glyph_fonts *f = ntc__glyph_fonts_open(&err);
    if (!f)
        printf("SKIP %s: %s\n", test, ntc_err_str(&err));
    return f;
}

static bool have_fonts(const char *test)
{
    ntc_glyph_fonts *f = fonts_or_skip(test);
    ntc__glyph_fonts_close(f);
    return f != NULL;
}

static long ink_sum(const uint8_t *img)
{
    long s = 0;
    for (int k = 0; k < PIX; k++)
        s += img[k];
    return s;
}

/* ---- glyphs ------------------------------------------------------------------- */

START_TEST(glyphs_sizes_and_classes)
{
    if (!have_fonts("glyphs_sizes_and_classes"))
        return;
    ntc_dataset *train = open_split("glyphs", NTC_SPLIT_TRAIN, 0);
    ntc_dataset *test = open_split("glyphs", NTC_SPLIT_TEST, 0);
    ck_assert_int_eq(train->n, 5200);
    ck_assert_int_eq(test->n, 1560);
    ck_assert_str_eq(train->name, "glyphs/train");
    ck_assert_int_eq(train->n_classes, 26);
    ck_assert(train->c == 1 && train->h == 28 && train->w == 28 && train->u8);
    int64_t count[26];
    class_counts(train, count);
    for (int k = 0; k < 26; k++) {
        char name[2] = {(char)('A' + k), 0};
        ck_assert_str_eq(train->class_names[k], name);
        ck_assert_int_eq(count[k], 200);
    }
    class_counts(test, count);
    for (int k = 0; k < 26; k++)
        ck_assert_int_eq(count[k], 60);
    ntc_dataset_free(train);
    ntc_dataset_free(test);

    ntc_dataset *all = open_split("glyphs-digits", NTC_SPLIT_ALL, 0);
    ck_assert_int_eq(all->n, 2600);
    ck_assert_int_eq(all->n_classes, 10);
    ck_assert_str_eq(all->class_names[0], "0");
    ck_assert_str_eq(all->class_names[9], "9");
    ntc_dataset_free(all);

    /* stratified validation: 520 of 5200 is 20 per class */
    ntc_dataset *val = open_split("glyphs", NTC_SPLIT_VAL, 520);
    ck_assert_int_eq(val->n, 520);
    class_counts(val, count);
    for (int k = 0; k < 26; k++)
        ck_assert_int_eq(count[k], 20);
    ntc_dataset_free(val);
}
END_TEST

START_TEST(glyphs_deterministic_and_splits_differ)
{
    if (!have_fonts("glyphs_deterministic_and_splits_differ"))
        return;
    ntc_dataset *a = open_split("glyphs", NTC_SPLIT_TRAIN, 0);
    ntc_dataset *b = open_split("glyphs", NTC_SPLIT_TRAIN, 0);
    ntc_dataset *test = open_split("glyphs", NTC_SPLIT_TEST, 0);
    ntc_dataset *all = open_split("glyphs", NTC_SPLIT_ALL, 0);
    ck_assert_mem_eq(a->u8, b->u8, (size_t)a->n * PIX);
    ck_assert_mem_eq(a->labels, b->labels, (size_t)a->n * sizeof(int32_t));
    /* all = train then test, each rendered the same as alone */
    ck_assert_int_eq(all->n, a->n + test->n);
    ck_assert_mem_eq(all->u8, a->u8, (size_t)a->n * PIX);
    ck_assert_mem_eq(all->u8 + (size_t)a->n * PIX, test->u8, (size_t)test->n * PIX);
    /* example i of train and of test show the same class in the same font,
     * but their distortions come from different streams */
    int same = 0;
    for (int64_t i = 0; i < test->n; i++) {
        ck_assert_int_eq(a->labels[i], test->labels[i]);
        same += !memcmp(a->u8 + i * PIX, test->u8 + i * PIX, PIX);
    }
    ck_assert_int_eq(same, 0);
    ntc_dataset_free(a);
    ntc_dataset_free(b);
    ntc_dataset_free(test);
    ntc_dataset_free(all);
}
END_TEST

/* Every image has ink, the ink's bounding box is centred to within the
 * random offset (2 px) plus slack for the outline's control box and
 * rounding, and it is a character-sized shape. */
START_TEST(glyphs_ink_centred)
{
    if (!have_fonts("glyphs_ink_centred"))
        return;
    const char *sources[] = {"glyphs", "glyphs-digits"};
    for (int s = 0; s < 2; s++) {
        ntc_dataset *ds = open_split(sources[s], NTC_SPLIT_ALL, 0);
        for (int64_t i = 0; i < ds->n; i++) {
            const uint8_t *img = ds->u8 + i * PIX;
            int x0 = 28, x1 = -1, y0 = 28, y1 = -1;
            for (int y = 0; y < 28; y++)
                for (int x = 0; x < 28; x++)
                    if (img[y * 28 + x] > 64) {
                        x0 = x < x0 ? x : x0;
                        x1 = x > x1 ? x : x1;
                        y0 = y < y0 ? y : y0;
                        y1 = y > y1 ? y : y1;
                    }
            ck_assert_msg(x1 >= 0, "%s example %lld has no ink", sources[s], (long long)i);
            double cx = (x0 + x1) / 2.0, cy = (y0 + y1) / 2.0;
            ck_assert_msg(fabs(cx - 13.5) <= 3.5 && fabs(cy - 13.5) <= 3.5,
                          "%s example %lld: ink centred at (%.1f, %.1f)", sources[s],
                          (long long)i, cx, cy);
            int side = x1 - x0 > y1 - y0 ? x1 - x0 + 1 : y1 - y0 + 1;
            ck_assert_msg(side >= 12 && side <= 26, "%s example %lld: ink %d px across",
                          sources[s], (long long)i, side);
        }
        ntc_dataset_free(ds);
    }
}
END_TEST

/* The largest distortion in every font, shifted to both extremes of the
 * offset: the ink is the same amount everywhere, so none is clipped. */
START_TEST(glyphs_never_clipped)
{
    ntc_glyph_fonts *f = fonts_or_skip("glyphs_never_clipped");
    if (!f)
        return;
    const char *chars = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    uint8_t img[PIX];
    ntc_err err = {0};
    for (int font = 0; font < ntc__glyph_fonts_count(f); font++)
        for (const char *ch = chars; *ch; ch++)
            for (int sign = -1; sign <= 1; sign += 2) {
                ntc_glyph_distortion d = {.angle_deg = 15.0f * sign, .shear = 0.3f * sign,
                                          .scale = 1.1f};
                ck_assert_msg(!ntc__glyph_render(f, font, *ch, &d, img, &err), "%s",
                              ntc_err_str(&err));
                long centred = ink_sum(img);
                ck_assert_int_gt(centred, 0);
                for (int k = 0; k < 4; k++) {
                    d.dx = k & 1 ? 2 : -2;
                    d.dy = k & 2 ? 2 : -2;
                    ck_assert(!ntc__glyph_render(f, font, *ch, &d, img, &err));
                    ck_assert_msg(ink_sum(img) == centred, "'%c' in %s is clipped at offset "
                                  "(%d, %d)", *ch, ntc__glyph_font_path(f, font), d.dx, d.dy);
                }
            }
    ntc__glyph_fonts_close(f);
}
END_TEST

/* With no distortion every glyph's larger side is 20 px: in a proportional
 * sans-serif font an 'O' (a ring about 20 px across) has far more ink than
 * an 'I' (one 20 px stroke; serif and mono fonts add bars, so they are not
 * compared), and the same letter in two fonts differs. */
START_TEST(glyphs_shapes_and_fonts)
{
    ntc_glyph_fonts *f = fonts_or_skip("glyphs_shapes_and_fonts");
    if (!f)
        return;
    int n = ntc__glyph_fonts_count(f);
    ck_assert_int_ge(n, 4);
    uint8_t (*a)[PIX] = malloc((size_t)n * PIX);
    uint8_t o[PIX], i_[PIX];
    const ntc_glyph_distortion plain = {.scale = 1.0f};
    ntc_err err = {0};
    int sans = 0;
    for (int font = 0; font < n; font++) {
        ck_assert(!ntc__glyph_render(f, font, 'O', &plain, o, &err));
        ck_assert(!ntc__glyph_render(f, font, 'I', &plain, i_, &err));
        const char *path = ntc__glyph_font_path(f, font);
        if (strstr(path, "Sans") && !strstr(path, "Mono")) {
            ck_assert_msg(ink_sum(o) > 2 * ink_sum(i_), "%s: ink of O %ld, of I %ld", path,
                          ink_sum(o), ink_sum(i_));
            sans++;
        }
        ck_assert(!ntc__glyph_render(f, font, 'A', &plain, a[font], &err));
        for (int g = 0; g < font; g++)
            ck_assert_msg(memcmp(a[g], a[font], PIX), "'A' is the same in %s and %s",
                          ntc__glyph_font_path(f, g), ntc__glyph_font_path(f, font));
    }
    ck_assert_int_gt(sans, 0);
    /* the undistorted 'I' of the first font (DejaVu Sans) is 20 px tall */
    ck_assert(!ntc__glyph_render(f, 0, 'I', &plain, i_, &err));
    int rows = 0;
    for (int y = 0; y < 28; y++) {
        long row = 0;
        for (int x = 0; x < 28; x++)
            row += i_[y * 28 + x];
        rows += row > 255;
    }
    ck_assert_int_eq(rows, 20);
    free(a);
    ntc__glyph_fonts_close(f);
}
END_TEST

START_TEST(glyph_distortion_ranges)
{
    ntc_rng r;
    ntc_rng_seed(&r, 3);
    float lo[3] = {1e9f, 1e9f, 1e9f}, hi[3] = {-1e9f, -1e9f, -1e9f};
    int offsets[5][5] = {{0}};
    for (int k = 0; k < 20000; k++) {
        ntc_glyph_distortion d;
        ntc__glyph_draw_distortion(&r, &d);
        float v[3] = {d.angle_deg, d.shear, d.scale};
        for (int j = 0; j < 3; j++) {
            lo[j] = fminf(lo[j], v[j]);
            hi[j] = fmaxf(hi[j], v[j]);
        }
        ck_assert(d.dx >= -2 && d.dx <= 2 && d.dy >= -2 && d.dy <= 2);
        offsets[d.dy + 2][d.dx + 2]++;
    }
    const float want_lo[3] = {-15, -0.3f, 0.8f}, want_hi[3] = {15, 0.3f, 1.1f};
    for (int j = 0; j < 3; j++) {
        float span = want_hi[j] - want_lo[j];
        ck_assert(lo[j] >= want_lo[j] && lo[j] < want_lo[j] + 0.01f * span);
        ck_assert(hi[j] <= want_hi[j] && hi[j] > want_hi[j] - 0.01f * span);
    }
    for (int y = 0; y < 5; y++)
        for (int x = 0; x < 5; x++)
            ck_assert_int_gt(offsets[y][x], 600);   /* 800 expected each */
}
END_TEST

/* The documented default normalisation is the train part's statistics. */
START_TEST(glyphs_default_normalisation)
{
    if (!have_fonts("glyphs_default_normalisation"))
        return;
    const char *sources[] = {"glyphs", "glyphs-digits"};
    for (int s = 0; s < 2; s++) {
        ntc_dataset *ds = open_split(sources[s], NTC_SPLIT_TRAIN, 0);
        double sum = 0, sq = 0, n = (double)ds->n * PIX;
        for (size_t k = 0; k < (size_t)ds->n * PIX; k++) {
            double v = ds->u8[k] / 255.0;
            sum += v;
            sq += v * v;
        }
        double mean = sum / n, std = sqrt(sq / n - mean * mean);
        ck_assert_msg(fabs(mean - ds->mean[0]) < 1e-3 && fabs(std - ds->std[0]) < 1e-3,
                      "%s: pixels have mean %.4f std %.4f, default is %.4f %.4f", sources[s],
                      mean, std, ds->mean[0], ds->std[0]);
        ntc_dataset_free(ds);
    }
}
END_TEST

/* Other input shapes go through the data layer's generic conversion. */
START_TEST(glyphs_resized)
{
    if (!have_fonts("glyphs_resized"))
        return;
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "glyphs-digits";
    o.split = NTC_SPLIT_TEST;
    o.channels = 3;
    o.height = o.width = 32;
    ntc_err err = {0};
    ck_assert(ntc_dataset_open(&o, &err) == NULL);
    ck_assert_msg(strstr(err.msg, "1x28x28 but the input shape is 3x32x32"), "%s", err.msg);
    o.resize = true;
    ntc_dataset *ds = ntc_dataset_open(&o, &err);
    ck_assert_msg(ds, "%s", ntc_err_str(&err));
    ck_assert(ds->c == 3 && ds->h == 32 && ds->w == 32 && ds->f32 && ds->n == 600);
    ck_assert_float_eq(ds->mean[2], ds->mean[0]);
    ntc_dataset_free(ds);
}
END_TEST

static int fail_at, allocs, live;

/* Fails the fail_at-th allocation; counts live blocks to find leaks. */
static void *failing_alloc(void *ptr, size_t size, void *ud)
{
    (void)ud;
    if (size == 0) {
        live -= ptr != NULL;
        free(ptr);
        return NULL;
    }
    if (allocs++ == fail_at)
        return NULL;
    live += ptr == NULL;
    return realloc(ptr, size);
}

/* FreeType allocates through the hook too: a failure anywhere (opening the
 * fonts, rendering, the dataset) is reported and leaks nothing.  FreeType
 * survives some failures (a driver that fails to load is skipped, and the
 * fonts do not need it), so the sweep covers every allocation of a clean
 * run rather than stopping at the first success: all of the first 400,
 * then every 37th (each attempt renders 600 images). */
START_TEST(glyphs_allocation_failures)
{
    if (!have_fonts("glyphs_allocation_failures"))
        return;
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "glyphs-digits:3,1";
    o.split = NTC_SPLIT_TEST;
    int failures = 0, total = 0;
    for (fail_at = -1; fail_at < total; fail_at += fail_at < 400 ? 1 : 37) {
        allocs = live = 0;
        ntc_err err = {0};
        ntc_set_allocator(failing_alloc, NULL);
        ntc_dataset *ds = ntc_dataset_open(&o, &err);
        ntc_set_allocator(NULL, NULL);
        if (fail_at == -1) {
            ck_assert_msg(ds, "%s", ntc_err_str(&err));
            total = allocs;
        }
        ck_assert_msg(ds || err.msg[0], "allocation %d failed without an error message", fail_at);
        failures += ds == NULL;
        ntc_set_allocator(failing_alloc, NULL);
        ntc_dataset_free(ds);
        ntc_set_allocator(NULL, NULL);
        ck_assert_msg(live == 0, "%d blocks leaked when allocation %d failed", live, fail_at);
    }
    ck_assert_int_gt(failures, 100);
}
END_TEST

/* ---- class subsets --------------------------------------------------------------- */

START_TEST(subset_fashion_test)
{
    ntc_dataset *full = open_split("fashion-mnist", NTC_SPLIT_TEST, 0);
    ntc_dataset *sub = open_split("fashion-mnist:0,2,4,6", NTC_SPLIT_TEST, 0);
    ck_assert_str_eq(sub->name, "fashion-mnist:0,2,4,6/test");
    ck_assert_int_eq(sub->n, 4000);
    ck_assert_int_eq(sub->n_classes, 4);
    const char *names[] = {"T-shirt/top", "Pullover", "Coat", "Shirt"};
    int64_t count[4];
    class_counts(sub, count);
    for (int k = 0; k < 4; k++) {
        ck_assert_str_eq(sub->class_names[k], names[k]);
        ck_assert_int_eq(count[k], 1000);
    }
    /* the subset is the full test set's examples of those classes, in order */
    const int32_t new_label[10] = {0, -1, 1, -1, 2, -1, 3, -1, -1, -1};
    int64_t j = 0;
    for (int64_t i = 0; i < full->n; i++) {
        int32_t l = new_label[full->labels[i]];
        if (l < 0)
            continue;
        ck_assert_int_eq(sub->labels[j], l);
        ck_assert_mem_eq(sub->u8 + j * 784, full->u8 + i * 784, 784);
        j++;
    }
    ck_assert_int_eq(j, sub->n);
    ck_assert_float_eq(sub->mean[0], full->mean[0]);

    /* the alias is the same data under its own name */
    ntc_dataset *hard = open_split("fashion-hard", NTC_SPLIT_TEST, 0);
    ck_assert_str_eq(hard->name, "fashion-hard/test");
    ck_assert_int_eq(hard->n, sub->n);
    ck_assert_mem_eq(hard->labels, sub->labels, (size_t)sub->n * sizeof(int32_t));
    ck_assert_mem_eq(hard->u8, sub->u8, (size_t)sub->n * 784);
    /* a subset of the alias indexes the alias's classes: 3,0 = Shirt, T-shirt/top */
    ntc_dataset *hard2 = open_split("fashion-hard:3,0", NTC_SPLIT_TEST, 0);
    ck_assert_str_eq(hard2->name, "fashion-hard:3,0/test");
    ck_assert_int_eq(hard2->n, 2000);
    ck_assert_str_eq(hard2->class_names[0], "Shirt");
    ck_assert_str_eq(hard2->class_names[1], "T-shirt/top");
    j = 0;
    for (int64_t i = 0; i < sub->n; i++)
        if (sub->labels[i] == 3 || sub->labels[i] == 0) {
            ck_assert_int_eq(hard2->labels[j], sub->labels[i] == 3 ? 0 : 1);
            ck_assert_mem_eq(hard2->u8 + j * 784, sub->u8 + i * 784, 784);
            j++;
        }
    ck_assert_int_eq(j, hard2->n);
    ntc_dataset_free(hard2);
    ntc_dataset_free(hard);
    ntc_dataset_free(sub);
    ntc_dataset_free(full);
}
END_TEST

/* Labels follow the listed order; validation is drawn from the subset. */
START_TEST(subset_order_and_validation)
{
    ntc_dataset *sub = open_split("fashion-mnist:6,0", NTC_SPLIT_VAL, 1000);
    ck_assert_int_eq(sub->n, 1000);
    ck_assert_str_eq(sub->class_names[0], "Shirt");
    ck_assert_str_eq(sub->class_names[1], "T-shirt/top");
    int64_t count[2];
    class_counts(sub, count);
    ck_assert_int_eq(count[0], 500);
    ck_assert_int_eq(count[1], 500);
    ntc_dataset_free(sub);
    sub = open_split("fashion-mnist:6,0", NTC_SPLIT_TRAIN, 1000);
    ck_assert_int_eq(sub->n, 12000 - 1000);
    ntc_dataset_free(sub);

    /* digits: the subset's test rows are the full test's rows of its classes */
    ntc_dataset *full = open_split("digits", NTC_SPLIT_TEST, 0);
    ntc_dataset *d = open_split("digits:9,3", NTC_SPLIT_TEST, 0);
    int64_t want[2] = {0, 0};
    for (int64_t i = 0; i < full->n; i++)
        if (full->labels[i] == 9 || full->labels[i] == 3)
            want[full->labels[i] == 3]++;
    class_counts(d, count);
    ck_assert_int_eq(count[0], want[0]);
    ck_assert_int_eq(count[1], want[1]);
    ck_assert_int_eq(d->n, want[0] + want[1]);
    ntc_dataset_free(d);
    ntc_dataset_free(full);
}
END_TEST

/* A user source (a pair of .npy files, itself written with a comma). */
START_TEST(subset_user_pair)
{
    char dir[512], im_path[600], lb_path[600], spec[1300];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    snprintf(im_path, sizeof im_path, "%s/im.npy", dir);
    snprintf(lb_path, sizeof lb_path, "%s/lb.npy", dir);
    uint8_t pix[6 * 4], lab[6] = {0, 1, 2, 0, 1, 2};
    for (int k = 0; k < 24; k++)
        pix[k] = (uint8_t)k;
    ntc_array im = {.dtype = NTC_DT_U8, .shape = {.rank = 3, .dims = {6, 2, 2}}, .data = pix};
    ntc_array lb = {.dtype = NTC_DT_U8, .shape = {.rank = 1, .dims = {6}}, .data = lab};
    ntc_err err = {0};
    ck_assert(!ntc_npy_write(im_path, &im, &err) && !ntc_npy_write(lb_path, &lb, &err));
    snprintf(spec, sizeof spec, "%s,%s:2,0", im_path, lb_path);
    ntc_dataset *ds = open_split(spec, NTC_SPLIT_ALL, 0);
    ck_assert_int_eq(ds->n, 4);
    ck_assert_int_eq(ds->n_classes, 2);
    ck_assert_str_eq(ds->class_names[0], "2");
    ck_assert_str_eq(ds->class_names[1], "0");
    const int32_t want[4] = {1, 0, 1, 0};   /* examples 0, 2, 3, 5 */
    ck_assert_mem_eq(ds->labels, want, sizeof want);
    ck_assert_int_eq(ds->u8[4], 8);         /* example 2's first pixel */
    ntc_dataset_free(ds);
}
END_TEST

START_TEST(subset_errors)
{
    open_fails("fashion-mnist:0,10", "class 10 of the subset is out of range: fashion-mnist has "
               "10 classes (0..9)");
    open_fails("fashion-mnist:2,4,2", "class 2 is listed twice");
    open_fails("fashion-mnist:", "empty class list after ':'");
    open_fails("fashion-mnist:1,,2", "bad class list '1,,2'");
    open_fails("fashion-mnist:1,2,", "bad class list");
    open_fails("fashion-mnist:-1", "bad class list");
    open_fails(":1", "no source before ':'");
    open_fails("fashion-hard:4", "class 4 of the subset is out of range: fashion-hard has 4 "
               "classes (0..3)");
    open_fails("no-such-source:1", "unknown data source 'no-such-source'");
    if (have_fonts("subset_errors (glyphs part)"))
        open_fails("glyphs:26", "class 26 of the subset is out of range: glyphs has 26 classes");
}
END_TEST

int main(void)
{
    Suite *s = suite_create("tasks");
    TCase *tc = tcase_create("tasks");
    tcase_set_timeout(tc, 300);   /* Fashion-MNIST files, a few thousand renders */
    tcase_add_test(tc, glyphs_sizes_and_classes);
    tcase_add_test(tc, glyphs_deterministic_and_splits_differ);
    tcase_add_test(tc, glyphs_ink_centred);
    tcase_add_test(tc, glyphs_never_clipped);
    tcase_add_test(tc, glyphs_shapes_and_fonts);
    tcase_add_test(tc, glyph_distortion_ranges);
    tcase_add_test(tc, glyphs_default_normalisation);
    tcase_add_test(tc, glyphs_resized);
    tcase_add_test(tc, glyphs_allocation_failures);
    tcase_add_test(tc, subset_fashion_test);
    tcase_add_test(tc, subset_order_and_validation);
    tcase_add_test(tc, subset_user_pair);
    tcase_add_test(tc, subset_errors);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
