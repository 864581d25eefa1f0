/* Datasets and batches: IDX files, .npy and IDX pairs, Fashion-MNIST and
 * digits from their Debian packages, PNG folders, splits, normalisation,
 * resampling, the batch iterator and augmentation, and the RNG. */
#include "testutil.h"
#include "ntc/data.h"

#include <math.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static const char *fixture(const char *name)
{
    static char buf[4096];
    snprintf(buf, sizeof buf, "%s", tu_src("tests/fixtures/data/"));
    strncat(buf, name, sizeof buf - strlen(buf) - 1);
    return buf;
}

/* "DIR/a,DIR/b" for two fixtures. */
static const char *pair(const char *a, const char *b)
{
    static char buf[8192];
    char first[4096];
    snprintf(first, sizeof first, "%s", fixture(a));
    snprintf(buf, sizeof buf, "%s,%s", first, fixture(b));
    return buf;
}

static ntc_dataset *open_ok(const ntc_data_opts *o)
{
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_open(o, &err);
    ck_assert_msg(ds != NULL, "%s", ntc_err_str(&err));
    return ds;
}

static void open_fails(const ntc_data_opts *o, const char *msg)
{
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_open(o, &err);
    ck_assert_msg(ds == NULL, "opened %s, expected '%s'", o->source, msg);
    ck_assert_msg(strstr(ntc_err_str(&err), msg), "expected '%s', got '%s'", msg, ntc_err_str(&err));
}

static void class_counts(const ntc_dataset *ds, int64_t *count)
{
    memset(count, 0, (size_t)ds->n_classes * sizeof *count);
    for (int64_t i = 0; i < ds->n; i++)
        count[ds->labels[i]]++;
}

/* ---- IDX ------------------------------------------------------------------ */

START_TEST(idx_raw_and_gzip)
{
    const char *names[] = {"idx_images", "idx_images.gz"};
    for (int f = 0; f < 2; f++) {
        ntc_array a;
        ntc_err err = {0};
        ck_assert_msg(ntc_idx_read(fixture(names[f]), &a, &err) == 0, "%s", ntc_err_str(&err));
        ck_assert_int_eq(a.dtype, NTC_DT_U8);
        ck_assert_int_eq(a.shape.rank, 3);
        ck_assert_int_eq(a.shape.dims[0], 3);
        ck_assert_int_eq(a.shape.dims[1], 2);
        ck_assert_int_eq(a.shape.dims[2], 2);
        for (int i = 0; i < 3; i++)
            for (int p = 0; p < 4; p++)
                ck_assert_int_eq(((uint8_t *)a.data)[i * 4 + p], 10 * i + p);
        ntc_array_free(&a);
    }
    ntc_array a;
    ntc_err err = {0};
    ck_assert_int_eq(ntc_idx_read(fixture("idx_labels.gz"), &a, &err), 0);
    ck_assert_int_eq(a.shape.rank, 1);
    ck_assert_mem_eq(a.data, "\x02\x00\x01", 3);
    ntc_array_free(&a);
}
END_TEST

START_TEST(idx_errors)
{
    struct { const char *file, *msg; } cases[] = {
        {"bad_idx_magic", "not an IDX file (bad magic"},
        {"bad_idx_truncated", "truncated IDX data: header announces 12 bytes, file has 9"},
        {"bad_idx_float", "IDX element type float32 is not supported"},
        {"f32_2x3.npy", "not an IDX file"},
        {"missing-idx", "cannot open"},
        {".", "cannot read: Is a directory"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        ntc_array a;
        ntc_err err = {0};
        ck_assert_int_eq(ntc_idx_read(fixture(cases[c].file), &a, &err), -1);
        ck_assert_ptr_null(a.data);
        ck_assert_msg(strstr(err.msg, cases[c].msg), "%s: got '%s'", cases[c].file, err.msg);
        ck_assert_str_eq(err.file, fixture(cases[c].file));
    }
    /* a gzip stream cut in the middle is truncation, not garbage */
    char *dir = strdup(tu_tmpdir()), path[512];
    snprintf(path, sizeof path, "%s/cut.gz", dir);
    gzFile g = gzopen(path, "wb");
    unsigned char blob[8 + 1000] = {0, 0, 8, 1, 0, 0, 0x03, 0xe8};
    gzwrite(g, blob, sizeof blob);
    gzclose(g);
    struct stat st;
    ck_assert_int_eq(stat(path, &st), 0);
    ck_assert_int_eq(truncate(path, st.st_size - 12), 0);
    ntc_array a;
    ntc_err err = {0};
    ck_assert_int_eq(ntc_idx_read(path, &a, &err), -1);
    ck_assert_msg(strstr(err.msg, "truncated") || strstr(err.msg, "corrupt gzip"), "%s", err.msg);
    free(dir);
}
END_TEST

/* ---- file pairs ------------------------------------------------------------- */

START_TEST(idx_pair_dataset)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = pair("idx_images.gz", "idx_labels");
    o.split = NTC_SPLIT_ALL;
    ntc_dataset *ds = open_ok(&o);
    ck_assert_int_eq(ds->n, 3);
    ck_assert_int_eq(ds->c, 1);
    ck_assert_int_eq(ds->h, 2);
    ck_assert_int_eq(ds->w, 2);
    ck_assert_int_eq(ds->n_classes, 3);
    ck_assert_str_eq(ds->class_names[2], "2");
    int64_t idx[] = {2, 0};
    float x[8];
    int32_t y[2];
    ntc_dataset_fill(ds, idx, 2, x, y);
    ck_assert_int_eq(y[0], 1);
    ck_assert_int_eq(y[1], 2);
    for (int p = 0; p < 4; p++) {   /* default: scaled to [0,1], mean 0, std 1 */
        ck_assert_float_eq_tol(x[p], (20 + p) / 255.0f, 1e-6);
        ck_assert_float_eq_tol(x[4 + p], p / 255.0f, 1e-6);
    }
    ntc_dataset_free(ds);

    o.source = pair("idx_images", "idx_labels_2");
    open_fails(&o, "2 labels for 3 images");
}
END_TEST

START_TEST(npy_pair_dataset)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = pair("pair_images.npy", "pair_labels.npy");
    o.split = NTC_SPLIT_TEST;   /* a user source: test is everything */
    o.channels = 1;
    o.height = o.width = 4;
    o.n_norm = 1;
    o.mean[0] = 0.5f;
    o.std[0] = 0.25f;
    ntc_dataset *ds = open_ok(&o);
    ck_assert_int_eq(ds->n, 6);
    ck_assert_int_eq(ds->n_classes, 3);
    ck_assert_ptr_nonnull(ds->u8);   /* uint8 stays uint8 in memory */
    float x[16];
    ntc_dataset_get(ds, 4, x);
    for (int p = 0; p < 16; p++)
        ck_assert_float_eq_tol(x[p], ((float)((16 * 4 + p) * 2 % 256) / 255.0f - 0.5f) / 0.25f, 1e-5);
    ck_assert_int_eq(ds->labels[4], 1);
    ntc_dataset_free(ds);
}
END_TEST

START_TEST(pair_errors)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.split = NTC_SPLIT_ALL;
    o.source = pair("pair_images.npy", "pair_labels_gap.npy");
    open_fails(&o, "class 1 has no examples");
    o.source = pair("pair_images.npy", "pair_labels_short.npy");
    open_fails(&o, "5 labels for 6 images");
    o.source = pair("pair_images.npy", "f32_2x3.npy");
    open_fails(&o, "labels must be a 1-D integer array, not float32");
    o.source = pair("u8_5.npy", "pair_labels.npy");
    open_fails(&o, "images must be [n,H,W] or [n,C,H,W], not rank 1");
    o.source = pair("pair_images.npy", "bad_f64.npy");
    open_fails(&o, "dtype float64 is not supported");
    o.source = pair("pair_images.npy", "pair_labels.npy");
    o.channels = 1;
    o.height = o.width = 8;
    open_fails(&o, "images are 1x4x4 but the input shape is 1x8x8");
    o.channels = o.height = o.width = 0;
    o.n_norm = 2;
    open_fails(&o, "normalisation has 2 mean/std pairs: give 1 (for all channels) or 1");
    o.n_norm = 1;
    o.std[0] = 0;
    open_fails(&o, "std of channel 0 must be > 0");
    ntc_data_opts_default(&o);
    o.source = "no-such-dataset";
    open_fails(&o, "unknown data source 'no-such-dataset'");
    o.source = pair("pair_images.npy", "pair_labels.npy");
    o.split = NTC_SPLIT_VAL;
    open_fails(&o, "no validation split");
    o.val_size = 6;
    open_fails(&o, "validation size 6 must be in [0, 6)");
    o.split = NTC_SPLIT_ALL;   /* a split not carved from train ignores it */
    ntc_dataset_free(open_ok(&o));
}
END_TEST

START_TEST(labels_out_of_range)
{
    float im[2 * 4] = {0};
    int64_t lb[2] = {0, 3};
    ntc_array images = {NTC_DT_F32, {.rank = 3, .dims = {2, 2, 2}}, im};
    ntc_array labels = {NTC_DT_I64, {.rank = 1, .dims = {2}}, lb};
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    ntc_err err = {0};
    ck_assert_ptr_null(ntc_dataset_from_arrays("mem", &images, &labels, 3, &o, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "label 3 of example 1 is out of range [0, 3)"));
    lb[1] = -1;
    ck_assert_ptr_null(ntc_dataset_from_arrays("mem", &images, &labels, 0, &o, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "label -1 of example 1 is negative"));
}
END_TEST

/* The validation split: disjoint from train, stratified, independent of
 * anything but the data. */
START_TEST(validation_split)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = pair("pair_images.npy", "pair_labels.npy");
    o.val_size = 3;
    ntc_dataset *tr = open_ok(&o);
    o.split = NTC_SPLIT_VAL;
    ntc_dataset *va = open_ok(&o);
    ck_assert_int_eq(tr->n, 3);
    ck_assert_int_eq(va->n, 3);
    /* example i's first pixel is 32*i: identify examples by it */
    bool seen[6] = {0};
    int64_t cnt[3];
    for (int s = 0; s < 2; s++) {
        ntc_dataset *ds = s ? va : tr;
        for (int64_t i = 0; i < ds->n; i++) {
            int ex = ds->u8[i * 16] / 32;
            ck_assert(!seen[ex]);
            seen[ex] = true;
            ck_assert_int_eq(ds->labels[i], ex % 3);
        }
        class_counts(ds, cnt);
        for (int k = 0; k < 3; k++)   /* two per class: one each side */
            ck_assert_int_eq(cnt[k], 1);
    }
    ck_assert_ptr_nonnull(strstr(va->name, "pair_images.npy/val"));
    ntc_dataset_free(tr);
    ntc_dataset_free(va);
}
END_TEST

/* ---- resampling --------------------------------------------------------------- */

/* 2x2 -> 4x4 bilinear with half-pixel centres, by hand: output coordinate i
 * maps to (i + 0.5) / 2 - 0.5 = -0.25, 0.25, 0.75, 1.25, clamped to [0, 1],
 * so each axis interpolates with weights 0, 0.25, 0.75, 1. */
START_TEST(bilinear_by_hand)
{
    float im[4] = {0, 1, 2, 3};
    int64_t lb[1] = {0};
    ntc_array images = {NTC_DT_F32, {.rank = 4, .dims = {1, 1, 2, 2}}, im};
    ntc_array labels = {NTC_DT_I64, {.rank = 1, .dims = {1}}, lb};
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.split = NTC_SPLIT_ALL;
    o.channels = 3;
    o.height = o.width = 4;
    ntc_err err = {0};
    ck_assert_ptr_null(ntc_dataset_from_arrays("mem", &images, &labels, 1, &o, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "images are 1x2x2 but the input shape is 3x4x4"));
    o.resize = true;
    ntc_dataset *ds = ntc_dataset_from_arrays("mem", &images, &labels, 1, &o, &err);
    ck_assert_msg(ds != NULL, "%s", ntc_err_str(&err));
    const float expect[16] = {
        0.0f, 0.25f, 0.75f, 1.0f,
        0.5f, 0.75f, 1.25f, 1.5f,
        1.5f, 1.75f, 2.25f, 2.5f,
        2.0f, 2.25f, 2.75f, 3.0f,
    };
    float x[48];
    ntc_dataset_get(ds, 0, x);
    for (int ch = 0; ch < 3; ch++)   /* gray replicated into 3 channels */
        for (int p = 0; p < 16; p++)
            ck_assert_float_eq_tol(x[ch * 16 + p], expect[p], 1e-6);
    ntc_dataset_free(ds);
}
END_TEST

/* RGB -> gray uses BT.601 luma. */
START_TEST(rgb_to_gray)
{
    uint8_t im[3] = {255, 0, 51};   /* one pixel: R, G, B planes */
    uint8_t lb[1] = {0};
    ntc_array images = {NTC_DT_U8, {.rank = 4, .dims = {1, 3, 1, 1}}, im};
    ntc_array labels = {NTC_DT_U8, {.rank = 1, .dims = {1}}, lb};
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.channels = 1;
    o.resize = true;
    o.split = NTC_SPLIT_ALL;
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_from_arrays("mem", &images, &labels, 0, &o, &err);
    ck_assert_msg(ds != NULL, "%s", ntc_err_str(&err));
    float x;
    ntc_dataset_get(ds, 0, &x);
    ck_assert_float_eq_tol(x, 0.299f + 0.114f * 0.2f, 1e-6);
    ntc_dataset_free(ds);
}
END_TEST

/* ---- built-in sources ---------------------------------------------------------- */

#define FASHION "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"
#define DIGITS "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"

START_TEST(fashion_mnist_test_set)
{
    if (access(FASHION, R_OK) != 0) {
        printf("fashion_mnist_test_set: skipped, %s absent (apt-get install dataset-fashion-mnist)\n",
               FASHION);
        return;
    }
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "fashion-mnist";
    o.split = NTC_SPLIT_TEST;
    o.channels = 1;
    o.height = o.width = 28;
    ntc_dataset *ds = open_ok(&o);
    ck_assert_int_eq(ds->n, 10000);
    ck_assert_int_eq(ds->n_classes, 10);
    ck_assert_str_eq(ds->name, "fashion-mnist/test");
    ck_assert_str_eq(ds->class_names[9], "Ankle boot");
    int64_t cnt[10];
    class_counts(ds, cnt);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(cnt[k], 1000);
    /* normalised with the documented mean/std: raw 0 -> -0.2860/0.3530 */
    float x[784];
    ntc_dataset_get(ds, 0, x);
    ck_assert_float_eq_tol(x[0], -0.2860f / 0.3530f, 1e-5);
    double sum = 0;
    for (int64_t i = 0; i < ds->n * 784; i++)
        sum += ds->u8[i];
    double mean = sum / (ds->n * 784.0) / 255.0;
    ck_assert_msg(fabs(mean - 0.2860) < 0.01, "test-set pixel mean %f", mean);
    ntc_dataset_free(ds);

    o.height = o.width = 32;
    open_fails(&o, "images are 1x28x28 but the input shape is 1x32x32");
    o.split = NTC_SPLIT_ALL;
    open_fails(&o, "separate train and test files");
}
END_TEST

START_TEST(fashion_mnist_validation)
{
    if (access(FASHION, R_OK) != 0) {
        printf("fashion_mnist_validation: skipped, Fashion-MNIST absent\n");
        return;
    }
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "fashion-mnist";
    o.val_size = 5000;
    ntc_dataset *tr = open_ok(&o);
    o.split = NTC_SPLIT_VAL;
    ntc_dataset *va = open_ok(&o);
    ck_assert_int_eq(tr->n, 55000);
    ck_assert_int_eq(va->n, 5000);
    int64_t ct[10], cv[10];
    class_counts(tr, ct);
    class_counts(va, cv);
    for (int k = 0; k < 10; k++) {   /* 6000 per class in train: 500 held out each */
        ck_assert_int_eq(cv[k], 500);
        ck_assert_int_eq(ct[k], 5500);
    }
    ck_assert_str_eq(va->name, "fashion-mnist/val");
    ntc_dataset_free(tr);
    ntc_dataset_free(va);
}
END_TEST

/* Class counts and the first row, read from the CSV independently. */
static int digits_truth(int64_t *count, float first[64])
{
    gzFile f = gzopen(DIGITS, "rb");
    if (!f)
        return -1;
    char line[1024];
    int rows = 0;
    memset(count, 0, 10 * sizeof *count);
    while (gzgets(f, line, sizeof line)) {
        char *last = strrchr(line, ',');
        count[atoi(last + 1)]++;
        if (rows++ == 0) {
            char *s = line;
            for (int k = 0; k < 64; k++)
                first[k] = strtof(s, &s), s++;
        }
    }
    gzclose(f);
    return rows;
}

START_TEST(digits)
{
    if (access(DIGITS, R_OK) != 0) {
        printf("digits: skipped, %s absent (apt-get install python3-sklearn)\n", DIGITS);
        return;
    }
    int64_t truth[10];
    float first[64];
    ck_assert_int_eq(digits_truth(truth, first), 1797);
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = "digits";
    o.split = NTC_SPLIT_ALL;
    o.n_norm = 1;
    o.mean[0] = 0;
    o.std[0] = 1;
    ntc_dataset *all = open_ok(&o);
    ck_assert_int_eq(all->n, 1797);
    ck_assert_int_eq(all->h, 8);
    int64_t c_all[10], c_tr[10], c_te[10];
    class_counts(all, c_all);
    for (int k = 0; k < 10; k++)
        ck_assert_int_eq(c_all[k], truth[k]);
    float x[64];
    ntc_dataset_get(all, 0, x);
    for (int p = 0; p < 64; p++)
        ck_assert_float_eq_tol(x[p], first[p] / 16.0f, 1e-6);
    ntc_dataset_free(all);

    o.split = NTC_SPLIT_TRAIN;
    ntc_dataset *tr = open_ok(&o);
    o.split = NTC_SPLIT_TEST;
    ntc_dataset *te = open_ok(&o);
    ck_assert_int_eq(tr->n, 1347);
    ck_assert_int_eq(te->n, 450);
    class_counts(tr, c_tr);
    class_counts(te, c_te);
    for (int k = 0; k < 10; k++) {   /* stratified: each class gives its share, +-1 */
        ck_assert_int_eq(c_tr[k] + c_te[k], truth[k]);
        double share = truth[k] * 450.0 / 1797.0;
        ck_assert_msg(fabs(c_te[k] - share) < 1.0, "class %d: %lld test of %f", k,
                      (long long)c_te[k], share);
    }
    ntc_dataset_free(tr);
    ntc_dataset_free(te);

    /* upsampled to a 28x28 backbone input: a corner copies the source corner
     * (clamped), and the default normalisation is the documented one */
    o.split = NTC_SPLIT_ALL;
    o.n_norm = 0;
    o.channels = 1;
    o.height = o.width = 28;
    ntc_dataset *up = open_ok(&o);
    ck_assert_int_eq(up->h, 28);
    ck_assert_float_eq_tol(up->mean[0], 0.3053f, 1e-6);
    float y[784];
    ntc_dataset_get(up, 0, y);
    ck_assert_float_eq_tol(y[0], (first[0] / 16.0f - 0.3053f) / 0.3760f, 1e-5);
    ck_assert_float_eq_tol(y[783], (first[63] / 16.0f - 0.3053f) / 0.3760f, 1e-5);
    ntc_dataset_free(up);
}
END_TEST

/* ---- PNG folders -------------------------------------------------------------- */

static void write_png(const char *dir, const char *cls, const char *name, int w, int h,
                      png_uint_32 format, const uint8_t *pix)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, cls);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/%s/%s", dir, cls, name);
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    img.width = (png_uint_32)w;
    img.height = (png_uint_32)h;
    img.format = format;
    ck_assert_msg(png_image_write_to_file(&img, path, 0, pix, 0, NULL), "%s", img.message);
}

START_TEST(png_folder)
{
    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    uint8_t g[16], rgb[48];
    for (int p = 0; p < 16; p++) {
        g[p] = (uint8_t)(p * 16);
        rgb[3 * p] = 255;          /* pure red: luma 0.299 */
        rgb[3 * p + 1] = 0;
        rgb[3 * p + 2] = 0;
    }
    /* class directories sorted by name: "cat" is 0, "dog" is 1 */
    write_png(dir, "dog", "b.png", 4, 4, PNG_FORMAT_GRAY, g);
    write_png(dir, "dog", "a.png", 4, 4, PNG_FORMAT_RGB, rgb);
    write_png(dir, "cat", "z.png", 4, 4, PNG_FORMAT_GRAY, g);
    /* gray+alpha: transparent pixels are black, opaque ones keep their value */
    uint8_t ga[32];
    for (int p = 0; p < 16; p++) {
        ga[2 * p] = 200;
        ga[2 * p + 1] = p % 2 ? 255 : 0;
    }
    write_png(dir, "cat", "alpha.png", 4, 4, PNG_FORMAT_GA, ga);
    char note[1024];
    snprintf(note, sizeof note, "%s/cat/readme.txt", dir);
    FILE *f = fopen(note, "w");
    fputs("not an image\n", f);
    fclose(f);

    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = dir;
    o.split = NTC_SPLIT_ALL;
    o.channels = 1;
    o.height = o.width = 4;
    ntc_dataset *ds = open_ok(&o);
    ck_assert_int_eq(ds->n, 4);
    ck_assert_int_eq(ds->n_classes, 2);
    ck_assert_str_eq(ds->class_names[0], "cat");
    ck_assert_str_eq(ds->class_names[1], "dog");
    int32_t want_labels[4] = {0, 0, 1, 1};   /* cat/alpha, cat/z, dog/a (RGB), dog/b */
    ck_assert_mem_eq(ds->labels, want_labels, sizeof want_labels);
    float x[16];
    ntc_dataset_get(ds, 0, x);
    for (int p = 0; p < 16; p++)
        ck_assert_float_eq_tol(x[p], p % 2 ? 200 / 255.0f : 0.0f, 1e-6);
    ntc_dataset_get(ds, 1, x);
    for (int p = 0; p < 16; p++)
        ck_assert_float_eq_tol(x[p], p * 16 / 255.0f, 1e-6);
    ntc_dataset_get(ds, 2, x);
    ck_assert_float_eq_tol(x[5], 0.299f, 1e-3);
    ntc_dataset_free(ds);

    /* a different size is resampled to the input shape, 3 channels replicate */
    o.channels = 3;
    o.height = o.width = 2;
    ds = open_ok(&o);
    ck_assert_int_eq(ds->c, 3);
    float y[12];
    ntc_dataset_get(ds, 1, y);   /* cat/z.png */
    /* 4 -> 2: output 0 samples source 0.5 (between pixels 0 and 1) */
    ck_assert_float_eq_tol(y[0], (0.5f * (0 + 16) * 0.5f + 0.5f * (64 + 80) * 0.5f) / 255.0f, 1e-5);
    ck_assert_float_eq_tol(y[4], y[0], 1e-6);
    ntc_dataset_free(ds);

    /* a broken PNG and an empty class are errors naming the file */
    snprintf(note, sizeof note, "%s/cat/broken.png", dir);
    f = fopen(note, "w");
    fputs("not a png", f);
    fclose(f);
    open_fails(&o, "broken.png: cannot read PNG");
    unlink(note);
    snprintf(note, sizeof note, "%s/empty", dir);
    mkdir(note, 0755);
    open_fails(&o, "class 'empty' has no PNG images");
}
END_TEST

/* ---- batches and augmentation -------------------------------------------------- */

/* n examples of 1x3x3 whose pixels all equal 1 + index (labels index % 4). */
static ntc_dataset *indexed(int n)
{
    float *im = malloc((size_t)n * 9 * sizeof(float));
    int32_t *lb = malloc((size_t)n * sizeof(int32_t));
    for (int i = 0; i < n; i++) {
        for (int p = 0; p < 9; p++)
            im[i * 9 + p] = (float)(1 + i);
        lb[i] = i % 4;
    }
    ntc_array images = {NTC_DT_F32, {.rank = 4, .dims = {n, 1, 3, 3}}, im};
    ntc_array labels = {NTC_DT_I32, {.rank = 1, .dims = {n}}, lb};
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.split = NTC_SPLIT_ALL;
    ntc_err err = {0};
    ntc_dataset *ds = ntc_dataset_from_arrays("indexed", &images, &labels, 0, &o, &err);
    ck_assert_msg(ds != NULL, "%s", ntc_err_str(&err));
    free(im);
    free(lb);
    return ds;
}

/* One epoch's example order; checks every example comes exactly once. */
static void epoch_order(ntc_batcher *b, const ntc_dataset *ds, int batch, int *order)
{
    float x[16 * 9];
    int32_t y[16];
    int n, got = 0;
    bool *seen = calloc((size_t)ds->n, 1);
    while ((n = ntc_batcher_next(b, x, y)) > 0) {
        ck_assert_int_le(n, batch);
        const int64_t *idx = ntc_batcher_last_indices(b);
        for (int k = 0; k < n; k++) {
            int ex = (int)x[k * 9] - 1;
            ck_assert_int_eq(ex, idx[k]);
            ck_assert_int_eq(y[k], ex % 4);
            ck_assert(!seen[ex]);
            seen[ex] = true;
            order[got++] = ex;
        }
    }
    ck_assert_int_eq(got, ds->n);
    free(seen);
}

START_TEST(batcher_coverage_and_determinism)
{
    ntc_dataset *ds = indexed(10);
    ntc_batch_opts bo = {.batch = 4, .shuffle = true, .seed = 99};
    ntc_err err = {0};
    ntc_batcher *a = ntc_batcher_new(ds, &bo, &err), *b = ntc_batcher_new(ds, &bo, &err);
    ck_assert_int_eq(ntc_batcher_batches_per_epoch(a), 3);
    int oa[3][10], ob[10];
    for (int e = 0; e < 3; e++) {
        epoch_order(a, ds, 4, oa[e]);
        epoch_order(b, ds, 4, ob);
        ck_assert_mem_eq(oa[e], ob, sizeof ob);   /* same seed, same batches */
    }
    ck_assert_int_eq(ntc_batcher_get_state(a).epoch, 3);
    ck_assert(memcmp(oa[0], oa[1], sizeof oa[0]) || memcmp(oa[1], oa[2], sizeof oa[0]));
    bo.seed = 100;
    ntc_batcher *c = ntc_batcher_new(ds, &bo, &err);
    int oc[10];
    epoch_order(c, ds, 4, oc);
    ck_assert(memcmp(oa[0], oc, sizeof oc) != 0);
    /* shuffles are uniform: over 1000 epochs every example starts an epoch
     * about 100 times and ends it about 100 times (binomial sd ~9.5) */
    int first[10] = {0}, last[10] = {0};
    for (int e = 0; e < 1000; e++) {
        epoch_order(c, ds, 4, oc);
        first[oc[0]]++;
        last[oc[9]]++;
    }
    for (int i = 0; i < 10; i++) {
        ck_assert_msg(abs(first[i] - 100) < 50, "example %d first %d times", i, first[i]);
        ck_assert_msg(abs(last[i] - 100) < 50, "example %d last %d times", i, last[i]);
    }
    /* without shuffling, the dataset's own order */
    bo.shuffle = false;
    ntc_batcher *d = ntc_batcher_new(ds, &bo, &err);
    epoch_order(d, ds, 4, oc);
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(oc[i], i);
    ntc_batcher_free(a);
    ntc_batcher_free(b);
    ntc_batcher_free(c);
    ntc_batcher_free(d);
    ntc_dataset_free(ds);
}
END_TEST

START_TEST(batcher_resume_and_drop_last)
{
    ntc_dataset *ds = indexed(10);
    ntc_batch_opts bo = {.batch = 3, .shuffle = true, .seed = 5, .aug = {.pad = 1}};
    ntc_err err = {0};
    ntc_batcher *a = ntc_batcher_new(ds, &bo, &err);
    float xa[27], xb[27];
    int32_t ya[3], yb[3];
    /* one epoch and one batch, then "interrupt" */
    while (ntc_batcher_next(a, xa, ya) > 0)
        ;
    ck_assert_int_eq(ntc_batcher_next(a, xa, ya), 3);
    ntc_batcher_state st = ntc_batcher_get_state(a);
    ck_assert_int_eq(st.epoch, 1);
    ck_assert_int_eq(st.pos, 3);
    ntc_batcher *b = ntc_batcher_new(ds, &bo, &err);
    ck_assert_msg(ntc_batcher_set_state(b, st, &err) == 0, "%s", ntc_err_str(&err));
    for (int k = 0; k < 8; k++) {   /* the rest of epoch 1 and all of epoch 2 */
        int na = ntc_batcher_next(a, xa, ya), nb = ntc_batcher_next(b, xb, yb);
        ck_assert_int_eq(na, nb);
        ck_assert_mem_eq(xa, xb, (size_t)na * 9 * sizeof(float));
        ck_assert_mem_eq(ya, yb, (size_t)na * sizeof(int32_t));
    }
    st.pos = 2;
    ck_assert_int_eq(ntc_batcher_set_state(b, st, &err), -1);
    ck_assert_ptr_nonnull(strstr(err.msg, "bad batcher state"));
    ntc_batcher_free(a);
    ntc_batcher_free(b);

    bo.drop_last = true;
    ntc_batcher *c = ntc_batcher_new(ds, &bo, &err);
    ck_assert_int_eq(ntc_batcher_batches_per_epoch(c), 3);
    int total = 0, n;
    while ((n = ntc_batcher_next(c, xa, ya)) > 0) {
        ck_assert_int_eq(n, 3);
        total += n;
    }
    ck_assert_int_eq(total, 9);
    ntc_batcher_free(c);
    bo.batch = 11;
    ck_assert_ptr_null(ntc_batcher_new(ds, &bo, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "not one full batch of 11"));
    bo.batch = 0;
    ck_assert_ptr_null(ntc_batcher_new(ds, &bo, &err));
    ntc_dataset_free(ds);
}
END_TEST

/* Random crop: same shape; every pixel is the image shifted by one offset
 * within [-pad, pad], or the padding (normalised black). */
START_TEST(crop_keeps_shape_and_content)
{
    enum { C = 2, H = 6, W = 5, PAD = 2 };
    float src[C * H * W], x[C * H * W], scratch[C * H * W];
    for (int i = 0; i < C * H * W; i++)
        src[i] = (float)(100 + i);   /* all distinct, all unlike the fill */
    const float fill[C] = {-1.5f, -2.5f};
    ntc_augment a = {.pad = PAD};
    ntc_rng r;
    ntc_rng_seed(&r, 3);
    int shifts_seen[2 * PAD + 1][2 * PAD + 1] = {{0}};
    for (int trial = 0; trial < 400; trial++) {
        memcpy(x, src, sizeof x);
        ntc_augment_apply(&a, &r, x, C, H, W, fill, scratch);
        /* recover the offset from any non-fill pixel, then check all pixels */
        int dy = 99, dx = 99;
        for (int i = 0; i < H * W && dy == 99; i++)
            if (x[i] != fill[0]) {
                int s = (int)x[i] - 100;
                dy = s / W - i / W;
                dx = s % W - i % W;
            }
        ck_assert_int_le(abs(dy), PAD);
        ck_assert_int_le(abs(dx), PAD);
        shifts_seen[dy + PAD][dx + PAD]++;
        for (int ch = 0; ch < C; ch++)
            for (int y = 0; y < H; y++)
                for (int xx = 0; xx < W; xx++) {
                    int sy = y + dy, sx = xx + dx;
                    float want = sy >= 0 && sy < H && sx >= 0 && sx < W
                                     ? src[(ch * H + sy) * W + sx] : fill[ch];
                    ck_assert_float_eq(x[(ch * H + y) * W + xx], want);
                }
    }
    for (int i = 0; i <= 2 * PAD; i++)   /* every offset occurs */
        for (int j = 0; j <= 2 * PAD; j++)
            ck_assert_int_gt(shifts_seen[i][j], 0);

    /* flips mirror rows and are off unless asked for */
    ntc_augment none = {0}, flip = {.hflip = true};
    memcpy(x, src, sizeof x);
    ntc_augment_apply(&none, &r, x, C, H, W, fill, scratch);
    ck_assert_mem_eq(x, src, sizeof x);
    int flipped = 0;
    for (int trial = 0; trial < 64; trial++) {
        memcpy(x, src, sizeof x);
        ntc_augment_apply(&flip, &r, x, C, H, W, fill, scratch);
        if (x[0] != src[0]) {
            flipped++;
            ck_assert_float_eq(x[0], src[W - 1]);
            ck_assert_float_eq(x[W + 1], src[2 * W - 2]);
        } else {
            ck_assert_mem_eq(x, src, sizeof x);
        }
    }
    ck_assert(flipped > 10 && flipped < 54);
}
END_TEST

/* ---- RNG ---------------------------------------------------------------------- */

START_TEST(rng_state_and_ranges)
{
    ntc_rng r, s;
    ntc_rng_seed(&r, 123);
    for (int i = 0; i < 10; i++)
        ntc_rng_next(&r);
    char text[NTC_RNG_TEXT];
    ntc_rng_format(&r, text);
    ck_assert_int_eq(strlen(text), 64);
    ck_assert_int_eq(ntc_rng_parse(text, &s), 0);
    for (int i = 0; i < 100; i++)
        ck_assert(ntc_rng_next(&r) == ntc_rng_next(&s));
    char zeros[65];
    memset(zeros, '0', 64);
    zeros[64] = 0;
    ck_assert_int_eq(ntc_rng_parse(zeros, &s), -1);   /* xoshiro's fixed point */
    ck_assert_int_eq(ntc_rng_parse("xyz", &s), -1);

    int hist[7] = {0};
    double sum = 0, sq = 0;
    for (int i = 0; i < 70000; i++) {
        uint64_t k = ntc_rng_below(&r, 7);
        ck_assert(k < 7);
        hist[k]++;
        float u = ntc_rng_uniform(&r);
        ck_assert(u >= 0 && u < 1);
        float z = ntc_rng_normal(&r);
        sum += z;
        sq += (double)z * z;
    }
    for (int k = 0; k < 7; k++)   /* 10000 expected, sd ~93 */
        ck_assert_msg(abs(hist[k] - 10000) < 500, "bucket %d: %d", k, hist[k]);
    ck_assert(fabs(sum / 70000) < 0.03 && fabs(sq / 70000 - 1) < 0.05);

    /* seed3 streams differ by each component */
    ntc_rng a, b;
    ntc_rng_seed3(&a, 1, 2, 3);
    ntc_rng_seed3(&b, 1, 3, 2);
    ck_assert(ntc_rng_next(&a) != ntc_rng_next(&b));
    int64_t idx[50];
    for (int i = 0; i < 50; i++)
        idx[i] = i;
    ntc_rng_shuffle(&a, idx, 50);
    int64_t check = 0;
    bool moved = false;
    for (int i = 0; i < 50; i++) {
        check += idx[i] * idx[i];
        moved |= idx[i] != i;
    }
    ck_assert(moved);
    ck_assert_int_eq(check, 49 * 50 * 99 / 6);
}
END_TEST

/* ---- allocation failures ------------------------------------------------------ */

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

/* Opens the source (and a batcher over it) with the N-th allocation failing,
 * for every N until it succeeds: each failure is reported, nothing leaks. */
static void sweep_allocation_failures(const ntc_data_opts *o)
{
    for (fail_at = 0;; fail_at++) {
        allocs = live = 0;
        ntc_err err = {0};
        ntc_set_allocator(failing_alloc, NULL);
        ntc_dataset *ds = ntc_dataset_open(o, &err);
        ntc_batch_opts bo = {.batch = 2, .shuffle = true, .aug = {.pad = 1}};
        ntc_batcher *b = ds ? ntc_batcher_new(ds, &bo, &err) : NULL;
        bool done = ds && b;
        ntc_batcher_free(b);
        ntc_dataset_free(ds);
        ntc_set_allocator(NULL, NULL);
        ck_assert_msg(live == 0, "%d blocks leaked when allocation %d failed", live, fail_at);
        if (done)
            break;
        ck_assert_msg(err.msg[0], "allocation %d failed without an error message", fail_at);
    }
    ck_assert_int_gt(fail_at, 3);
}

START_TEST(allocation_failures)
{
    ntc_data_opts o;
    ntc_data_opts_default(&o);
    o.source = pair("pair_images.npy", "pair_labels.npy");
    o.val_size = 2;
    o.channels = 3;
    o.height = o.width = 5;
    o.resize = true;
    sweep_allocation_failures(&o);

    char dir[512];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir());
    uint8_t g[16] = {0};
    write_png(dir, "a", "1.png", 4, 4, PNG_FORMAT_GRAY, g);
    write_png(dir, "b", "1.png", 2, 2, PNG_FORMAT_GRAY, g);
    write_png(dir, "b", "2.png", 4, 4, PNG_FORMAT_GRAY, g);
    ntc_data_opts_default(&o);
    o.source = dir;
    o.split = NTC_SPLIT_ALL;
    sweep_allocation_failures(&o);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("data");
    TCase *tc = tcase_create("data");
    tcase_set_timeout(tc, 120);   /* Fashion-MNIST train is 26 MB of gzip */
    tcase_add_test(tc, idx_raw_and_gzip);
    tcase_add_test(tc, idx_errors);
    tcase_add_test(tc, idx_pair_dataset);
    tcase_add_test(tc, npy_pair_dataset);
    tcase_add_test(tc, pair_errors);
    tcase_add_test(tc, labels_out_of_range);
    tcase_add_test(tc, validation_split);
    tcase_add_test(tc, bilinear_by_hand);
    tcase_add_test(tc, rgb_to_gray);
    tcase_add_test(tc, fashion_mnist_test_set);
    tcase_add_test(tc, fashion_mnist_validation);
    tcase_add_test(tc, digits);
    tcase_add_test(tc, png_folder);
    tcase_add_test(tc, batcher_coverage_and_determinism);
    tcase_add_test(tc, batcher_resume_and_drop_last);
    tcase_add_test(tc, crop_keeps_shape_and_content);
    tcase_add_test(tc, rng_state_and_ranges);
    tcase_add_test(tc, allocation_failures);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
