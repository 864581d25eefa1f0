/* A folder of PNG images per class:
 *
 *   DIR/CLASS_A/IMAGE.png, DIR/CLASS_B/IMAGE.png, ...
 *
 * Class k is the k-th subdirectory in byte order of the names (strcmp, not
 * the locale, so every machine numbers the classes the same way); files
 * are read in the same order.  Images are decoded with libpng's simplified
 * API into 8-bit gray or RGB (palettes expanded, 16-bit reduced, alpha
 * composited on black), then conformed to the input shape (the first image's
 * when the caller gives none).  When every image already has that shape
 * the pixels stay uint8; otherwise they are resampled into float32.
 */
#include "data_internal.h"

#include <dirent.h>
#include <png.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

typedef struct {
    uint8_t *pix;                /* CHW */
    int c, h, w;
    int32_t label;
} decoded;

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        ntc_free(names[i]);
    ntc_free(names);
}

/* Sorted entries of dir: subdirectories (want_dirs) or *.png files. */
static int list_dir(const char *dir, bool want_dirs, char ***out, int *n_out, ntc_err *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return ntc_error(err, dir, 0, "cannot open directory");
    char **names = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        struct stat st;
        if (stat(path, &st) != 0)
            continue;
        size_t len = strlen(e->d_name);
        bool ok = want_dirs ? S_ISDIR(st.st_mode)
                            : S_ISREG(st.st_mode) && len > 4 && !strcasecmp(e->d_name + len - 4, ".png");
        if (!ok)
            continue;
        if (ntc_grow((void **)&names, &cap, n + 1, sizeof(char *)) ||
            !(names[n] = ntc_strdup(e->d_name))) {
            closedir(d);
            free_names(names, n);
            return ntc_error(err, dir, 0, "out of memory");
        }
        n++;
    }
    closedir(d);
    if (n)
        qsort(names, (size_t)n, sizeof(char *), cmp_names);
    *out = names;
    *n_out = n;
    return 0;
}

/* Decodes path into im (pixels CHW, 1 or 3 channels). */
static int decode_png(const char *path, decoded *im, ntc_err *err)
{
    png_image img;
    memset(&img, 0, sizeof img);
    img.version = PNG_IMAGE_VERSION;
    if (!png_image_begin_read_from_file(&img, path))
        return ntc_error(err, path, 0, "cannot read PNG: %s", img.message);
    int c = (img.format & PNG_FORMAT_FLAG_COLOR) ? 3 : 1;
    img.format = c == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    size_t hw = (size_t)img.height * img.width, bytes = PNG_IMAGE_SIZE(img);
    uint8_t *hwc = ntc_malloc(bytes);
    uint8_t *chw = ntc_malloc(bytes);
    if (!hwc || !chw) {
        ntc_free(hwc);
        ntc_free(chw);
        png_image_free(&img);
        return ntc_error(err, path, 0, "out of memory");
    }
    /* Without a background libpng composites onto the buffer's contents. */
    png_color black = {0, 0, 0};
    if (!png_image_finish_read(&img, &black, hwc, 0, NULL)) {
        ntc_free(hwc);
        ntc_free(chw);
        return ntc_error(err, path, 0, "cannot decode PNG: %s", img.message);
    }
    for (size_t k = 0; k < hw; k++)
        for (int ch = 0; ch < c; ch++)
            chw[(size_t)ch * hw + k] = hwc[k * (size_t)c + (size_t)ch];
    ntc_free(hwc);
    im->pix = chw;
    im->c = c;
    im->h = (int)img.height;
    im->w = (int)img.width;
    return 0;
}

/* Puts the decoded images into ds at shape c x h x w. */
static int assemble(ntc_dataset *ds, decoded *ims, int64_t n, int c, int h, int w, const char *dir,
                    ntc_err *err)
{
    bool exact = true;
    for (int64_t i = 0; i < n; i++)
        exact &= ims[i].c == c && ims[i].h == h && ims[i].w == w;
    size_t size = (size_t)c * h * w;
    ds->labels = ntc_malloc((size_t)n * sizeof(int32_t));
    if (exact)
        ds->u8 = ntc_malloc((size_t)n * size);
    else
        ds->f32 = ntc_malloc((size_t)n * size * sizeof(float));
    float *tmp = exact ? NULL : ntc_malloc((size_t)NTC_DATA_MAX_CH * 65536 * sizeof(float));
    if (!ds->labels || !(ds->u8 || ds->f32) || (!exact && !tmp)) {
        ntc_free(tmp);
        return ntc_error(err, dir, 0, "out of memory for %lld images", (long long)n);
    }
    for (int64_t i = 0; i < n; i++) {
        decoded *im = &ims[i];
        ds->labels[i] = im->label;
        if (exact) {
            memcpy(ds->u8 + (size_t)i * size, im->pix, size);
            continue;
        }
        size_t in_size = (size_t)im->c * im->h * im->w;
        if (in_size > (size_t)NTC_DATA_MAX_CH * 65536) {
            float *bigger = ntc_realloc(tmp, in_size * sizeof(float));
            if (!bigger) {
                ntc_free(tmp);
                return ntc_error(err, dir, 0, "out of memory");
            }
            tmp = bigger;
        }
        for (size_t k = 0; k < in_size; k++)
            tmp[k] = (float)im->pix[k] * (1.0f / 255.0f);
        ntc__conform_image(tmp, im->c, im->h, im->w, ds->f32 + (size_t)i * size, c, h, w);
    }
    ntc_free(tmp);
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    ds->scale = exact ? 1.0f / 255.0f : 1.0f;
    return 0;
}

ntc_dataset *ntc__png_folder_load(const char *dir, const ntc_data_opts *o, ntc_err *err)
{
    char **classes = NULL;
    int n_classes = 0, cap = 0;
    int64_t n = 0;
    decoded *ims = NULL;
    ntc_dataset *ds = NULL;
    if (list_dir(dir, true, &classes, &n_classes, err))
        return NULL;
    if (!n_classes) {
        ntc_error(err, dir, 0, "no class subdirectories (expected DIR/CLASS/*.png)");
        goto fail;
    }
    for (int k = 0; k < n_classes; k++) {
        char sub[4096];
        snprintf(sub, sizeof sub, "%s/%s", dir, classes[k]);
        char **files;
        int n_files;
        if (list_dir(sub, false, &files, &n_files, err))
            goto fail;
        if (!n_files) {
            ntc_error(err, sub, 0, "class '%s' has no PNG images", classes[k]);
            goto fail;
        }
        for (int i = 0; i < n_files; i++) {
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", sub, files[i]);
            if (n >= INT32_MAX || ntc_grow((void **)&ims, &cap, (int)n + 1, sizeof(decoded))) {
                free_names(files, n_files);
                ntc_error(err, dir, 0, "out of memory");
                goto fail;
            }
            if (decode_png(path, &ims[n], err)) {
                free_names(files, n_files);
                goto fail;
            }
            ims[n++].label = k;
        }
        free_names(files, n_files);
    }
    int c = o->channels ? o->channels : ims[0].c;
    int h = o->height ? o->height : ims[0].h;
    int w = o->width ? o->width : ims[0].w;
    if (c <= 0 || h <= 0 || w <= 0 || !ntc__channels_convertible(ims[0].c, c) ||
        !ntc__channels_convertible(3, c)) {
        ntc_error(err, dir, 0, "cannot convert PNG images to input shape %dx%dx%d "
                  "(channels must be 1 or 3)", c, h, w);
        goto fail;
    }
    ds = ntc__dataset_alloc(dir);
    if (!ds) {
        ntc_error(err, dir, 0, "out of memory");
        goto fail;
    }
    ds->n_classes = n_classes;
    ds->class_names = classes;   /* the dataset owns them from here */
    classes = NULL;
    if (assemble(ds, ims, n, c, h, w, dir, err))
        goto fail;
    for (int64_t i = 0; i < n; i++)
        ntc_free(ims[i].pix);
    ntc_free(ims);
    return ds;
fail:
    for (int64_t i = 0; i < n; i++)
        ntc_free(ims[i].pix);
    ntc_free(ims);
    if (classes)
        free_names(classes, n_classes);
    ntc_dataset_free(ds);
    return NULL;
}
