/* Characters rendered from installed TrueType fonts, with FreeType.
 *
 * Fonts: the fixed list below, in this order, keeping those installed (at
 * least 4 are required).  It is the 6 faces of fonts-dejavu-core and the 12
 * of fonts-liberation2 (sans, serif and mono; regular, bold and the
 * italics), so a machine with both packages renders exactly the same data
 * as any other.  Example i of a part (train or test) shows class i % K (K =
 * 26 letters or 10 digits) in font (i / K) % n_fonts: every class cycles
 * through all the fonts.
 *
 * Geometry: the glyph's undistorted outline is scaled so its larger side is
 * GLYPH_BOX px (MNIST puts its digits in a 20x20 box of a 28x28 image), then
 * transformed by scale * rotation * shear through FT_Set_Transform, rendered
 * anti-aliased without hinting (hinting fights arbitrary transforms), and
 * its bounding box centred on the canvas, moved by (dx, dy).
 *
 * FreeType allocates through ntc_malloc/ntc_free (a private FT_Memory), so
 * the fault-injection hook covers it too.
 */
#include "glyphs.h"
#include "data_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <ft2build.h>
#include FT_FREETYPE_H
#include FT_MODULE_H
#include FT_OUTLINE_H

#define FONT_DIR "/usr/share/fonts/truetype/"
#define MIN_FONTS 4
#define GLYPH_BOX 20.0               /* px: the larger side before distortion */
#define INNER 26                     /* px: the most a distorted glyph may cover */
#define MEASURE_PX 64                /* em size at which outlines are measured */
/* The stream every example's randomness comes from (part of the data set's
 * definition, like the split seeds in dataset.c). */
#define GLYPHS_SEED 0x61a9b5f0e75eedULL

/* Default normalisation: mean/std of the train part's pixels in [0,1],
 * computed with the 18 fonts of the list (tests/test_tasks.c recomputes). */
#define LETTERS_MEAN 0.1588f
#define LETTERS_STD 0.3370f
#define DIGITS_MEAN 0.1440f
#define DIGITS_STD 0.3238f

static const char *const font_files[] = {
    "dejavu/DejaVuSans.ttf",
    "dejavu/DejaVuSans-Bold.ttf",
    "dejavu/DejaVuSansMono.ttf",
    "dejavu/DejaVuSansMono-Bold.ttf",
    "dejavu/DejaVuSerif.ttf",
    "dejavu/DejaVuSerif-Bold.ttf",
    "liberation2/LiberationMono-Bold.ttf",
    "liberation2/LiberationMono-BoldItalic.ttf",
    "liberation2/LiberationMono-Italic.ttf",
    "liberation2/LiberationMono-Regular.ttf",
    "liberation2/LiberationSans-Bold.ttf",
    "liberation2/LiberationSans-BoldItalic.ttf",
    "liberation2/LiberationSans-Italic.ttf",
    "liberation2/LiberationSans-Regular.ttf",
    "liberation2/LiberationSerif-Bold.ttf",
    "liberation2/LiberationSerif-BoldItalic.ttf",
    "liberation2/LiberationSerif-Italic.ttf",
    "liberation2/LiberationSerif-Regular.ttf",
};
#define N_FONT_FILES ((int)(sizeof font_files / sizeof font_files[0]))

struct ntc_glyph_fonts {
    struct FT_MemoryRec_ memory;     /* must outlive lib */
    FT_Library lib;
    int n;
    FT_Face face[N_FONT_FILES];
    char path[N_FONT_FILES][128];
};

/* ---- FreeType's memory through ntc_malloc ----------------------------------- */

static void *ft_alloc(FT_Memory m, long size)
{
    (void)m;
    return ntc_malloc((size_t)size);
}

static void ft_free(FT_Memory m, void *p)
{
    (void)m;
    ntc_free(p);
}

static void *ft_realloc(FT_Memory m, long cur, long size, void *p)
{
    (void)m;
    (void)cur;
    return ntc_realloc(p, (size_t)size);
}

/* ---- fonts ------------------------------------------------------------------- */

void ntc__glyph_fonts_close(ntc_glyph_fonts *f)
{
    if (!f)
        return;
    for (int i = 0; i < f->n; i++)
        FT_Done_Face(f->face[i]);
    if (f->lib)
        FT_Done_Library(f->lib);
    ntc_free(f);
}

ntc_glyph_fonts *ntc__glyph_fonts_open(ntc_err *err)
{
    ntc_glyph_fonts *f = ntc_calloc(1, sizeof *f);
    if (!f) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    f->memory = (struct FT_MemoryRec_){.alloc = ft_alloc, .free = ft_free, .realloc = ft_realloc};
    if (FT_New_Library(&f->memory, &f->lib)) {
        f->lib = NULL;
        ntc_error(err, NULL, 0, "FreeType failed to initialise (out of memory?)");
        goto fail;
    }
    FT_Add_Default_Modules(f->lib);
    for (int i = 0; i < N_FONT_FILES; i++) {
        char *path = f->path[f->n];
        snprintf(path, sizeof f->path[0], "%s%s", FONT_DIR, font_files[i]);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;                /* not installed: the data uses the others */
        FT_Error e = FT_New_Face(f->lib, path, 0, &f->face[f->n]);
        if (e) {
            ntc_error(err, path, 0, "FreeType cannot open this font (error %d)", e);
            goto fail;
        }
        f->n++;
    }
    if (f->n < MIN_FONTS) {
        ntc_error(err, FONT_DIR, 0, "the glyph data sets need at least %d of their %d fonts, "
                  "found %d: install the Debian packages fonts-dejavu-core and fonts-liberation2",
                  MIN_FONTS, N_FONT_FILES, f->n);
        goto fail;
    }
    return f;
fail:
    ntc__glyph_fonts_close(f);
    return NULL;
}

int ntc__glyph_fonts_count(const ntc_glyph_fonts *f) { return f->n; }

const char *ntc__glyph_font_path(const ntc_glyph_fonts *f, int i) { return f->path[i]; }

/* ---- rendering ---------------------------------------------------------------- */

void ntc__glyph_draw_distortion(ntc_rng *r, ntc_glyph_distortion *d)
{
    d->angle_deg = 15.0f * (2.0f * ntc_rng_uniform(r) - 1.0f);
    d->shear = 0.3f * (2.0f * ntc_rng_uniform(r) - 1.0f);
    d->scale = 0.8f + 0.3f * ntc_rng_uniform(r);
    d->dx = (int)ntc_rng_below(r, 5) - 2;
    d->dy = (int)ntc_rng_below(r, 5) - 2;
}

static FT_Fixed fixed(double v) { return (FT_Fixed)lround(v * 65536.0); }

/* Loads ch into face->glyph transformed by k * rotation * shear (the outline
 * is measured in MEASURE_PX-em units, so k scales from there). */
static FT_Error load_transformed(FT_Face face, FT_UInt index, double k, const ntc_glyph_distortion *d,
                                 bool render)
{
    double a = d->angle_deg * (M_PI / 180.0), c = cos(a), s = sin(a), sh = d->shear;
    /* [[c, -s], [s, c]] * [[1, sh], [0, 1]] in FreeType's y-up coordinates */
    FT_Matrix m = {.xx = fixed(k * c), .xy = fixed(k * (c * sh - s)),
                   .yx = fixed(k * s), .yy = fixed(k * (s * sh + c))};
    FT_Set_Transform(face, &m, NULL);
    FT_Int32 flags = FT_LOAD_NO_HINTING | FT_LOAD_NO_BITMAP | (render ? FT_LOAD_RENDER : 0);
    return FT_Load_Glyph(face, index, flags);
}

int ntc__glyph_render(ntc_glyph_fonts *f, int font, char ch, const ntc_glyph_distortion *d,
                      uint8_t *out, ntc_err *err)
{
    FT_Face face = f->face[font];
    FT_UInt index = FT_Get_Char_Index(face, (FT_ULong)(unsigned char)ch);
    if (!index)
        return ntc_error(err, f->path[font], 0, "the font has no glyph for '%c'", ch);
    FT_Error e = FT_Set_Pixel_Sizes(face, 0, MEASURE_PX);
    /* measure the undistorted outline: its larger side becomes GLYPH_BOX px */
    const ntc_glyph_distortion identity = {.scale = 1.0f};
    if (!e)
        e = load_transformed(face, index, 1.0, &identity, false);
    if (e)
        return ntc_error(err, f->path[font], 0, "FreeType cannot load '%c' (error %d)", ch, e);
    FT_BBox box;
    FT_Outline_Get_CBox(&face->glyph->outline, &box);
    double side = fmax((double)(box.xMax - box.xMin), (double)(box.yMax - box.yMin)) / 64.0;
    if (side <= 0)
        return ntc_error(err, f->path[font], 0, "the glyph for '%c' is empty", ch);
    double k = GLYPH_BOX / side * d->scale;
    FT_Bitmap *bm = &face->glyph->bitmap;
    /* rotation and shear can push a large glyph past the canvas: shrink it
     * until it fits (twice is always enough; the loop bounds rounding) */
    for (int attempt = 0;; attempt++) {
        e = load_transformed(face, index, k, d, true);
        if (e)
            return ntc_error(err, f->path[font], 0, "FreeType cannot render '%c' (error %d)", ch, e);
        unsigned big = bm->width > bm->rows ? bm->width : bm->rows;
        if (big <= INNER)
            break;
        if (attempt == 3)
            return ntc_error(err, f->path[font], 0, "'%c' does not fit in %d px", ch, INNER);
        k *= (INNER - 0.5) / big;
    }
    FT_Set_Transform(face, NULL, NULL);
    if (bm->pixel_mode != FT_PIXEL_MODE_GRAY || bm->num_grays != 256)
        return ntc_error(err, f->path[font], 0, "unexpected FreeType bitmap mode %d", bm->pixel_mode);
    int w = (int)bm->width, h = (int)bm->rows, n = NTC_GLYPH_CANVAS;
    int x0 = (n - w) / 2 + d->dx, y0 = (n - h) / 2 + d->dy;
    x0 = x0 < 0 ? 0 : x0 > n - w ? n - w : x0;
    y0 = y0 < 0 ? 0 : y0 > n - h ? n - h : y0;
    memset(out, 0, (size_t)n * n);
    for (int y = 0; y < h; y++)
        memcpy(out + (size_t)(y0 + y) * n + x0, bm->buffer + (ptrdiff_t)y * bm->pitch, (size_t)w);
    return 0;
}

/* ---- the data set ---------------------------------------------------------------- */

/* Renders part (0 train, 1 test) with per_class examples per class into
 * ds's arrays from example `first` on. */
static int render_part(ntc_glyph_fonts *f, const char *chars, int k_classes, int part,
                       int per_class, ntc_dataset *ds, int64_t first, ntc_err *err)
{
    size_t size = (size_t)NTC_GLYPH_CANVAS * NTC_GLYPH_CANVAS;
    for (int64_t i = 0; i < (int64_t)per_class * k_classes; i++) {
        ntc_rng r;
        ntc_rng_seed3(&r, GLYPHS_SEED, (uint64_t)part, (uint64_t)i);
        ntc_glyph_distortion d;
        ntc__glyph_draw_distortion(&r, &d);
        int cls = (int)(i % k_classes), font = (int)((i / k_classes) % f->n);
        if (ntc__glyph_render(f, font, chars[cls], &d, ds->u8 + (size_t)(first + i) * size, err))
            return -1;
        ds->labels[first + i] = cls;
    }
    return 0;
}

ntc_dataset *ntc__glyphs_load(bool digits, const ntc_data_opts *o, ntc_err *err)
{
    const char *chars = digits ? "0123456789" : "ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    int k_classes = (int)strlen(chars);
    bool train = o->split != NTC_SPLIT_TEST, test = o->split == NTC_SPLIT_TEST ||
                                                    o->split == NTC_SPLIT_ALL;
    int64_t n_train = train ? (int64_t)NTC_GLYPHS_TRAIN_PER_CLASS * k_classes : 0;
    int64_t n = n_train + (test ? (int64_t)NTC_GLYPHS_TEST_PER_CLASS * k_classes : 0);
    ntc_glyph_fonts *f = ntc__glyph_fonts_open(err);
    if (!f)
        return NULL;
    ntc_dataset *ds = ntc__dataset_alloc(digits ? "glyphs-digits" : "glyphs");
    if (ds) {
        ds->u8 = ntc_malloc((size_t)n * NTC_GLYPH_CANVAS * NTC_GLYPH_CANVAS);
        ds->labels = ntc_malloc((size_t)n * sizeof(int32_t));
        ds->class_names = ntc_calloc((size_t)k_classes, sizeof(char *));
    }
    if (!ds || !ds->u8 || !ds->labels || !ds->class_names) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    ds->n_classes = k_classes;
    for (int c = 0; c < k_classes; c++) {
        char name[2] = {chars[c], 0};
        if (!(ds->class_names[c] = ntc_strdup(name))) {
            ntc_error(err, NULL, 0, "out of memory");
            goto fail;
        }
    }
    ds->n = n;
    ds->c = 1;
    ds->h = ds->w = NTC_GLYPH_CANVAS;
    ds->scale = 1.0f / 255.0f;
    ds->mean[0] = digits ? DIGITS_MEAN : LETTERS_MEAN;
    ds->std[0] = digits ? DIGITS_STD : LETTERS_STD;
    if ((train && render_part(f, chars, k_classes, 0, NTC_GLYPHS_TRAIN_PER_CLASS, ds, 0, err)) ||
        (test && render_part(f, chars, k_classes, 1, NTC_GLYPHS_TEST_PER_CLASS, ds, n_train, err)))
        goto fail;
    ntc__glyph_fonts_close(f);
    return ds;
fail:
    ntc__glyph_fonts_close(f);
    ntc_dataset_free(ds);
    return NULL;
}
