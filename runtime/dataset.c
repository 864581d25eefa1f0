/* Datasets: the built-in sources, user sources, splits and normalisation.
 *
 * Every source is first loaded whole into an ntc_dataset (raw values, all
 * examples), then the same steps run for all of them:
 *   1. labels checked (range; on user data, no class without examples),
 *   2. the split selected (ascending example order is kept),
 *   3. images conformed to the requested [C,H,W] (channels, bilinear size),
 *   4. the normalisation fixed.
 *
 * Built-in sources and their defaults (mean/std computed over the training
 * pixels scaled to [0,1]):
 *   fashion-mnist  Debian's dataset-fashion-mnist IDX files; train 60000
 *                  (t10k: test 10000); 1x28x28; mean 0.2860, std 0.3530.
 *   digits         scikit-learn's 8x8 digits (python3-sklearn), 1797 rows of
 *                  64 values 0..16 and a label; a fixed stratified split of
 *                  1347 train / 450 test; always resampled to the requested
 *                  size; mean 0.3053, std 0.3760 (over the 8x8 pixels).
 * User sources (a PNG folder, IMAGES,LABELS files) have no test split of
 * their own: test and all give every example; default mean 0, std 1 (values
 * scaled to [0,1] for uint8, float data taken as is).
 *
 *   glyphs         letters A..Z rendered from installed fonts (glyphs.c);
 *                  train 5200, test 1560; 1x28x28.  glyphs-digits: 0..9.
 *
 * The validation split is val_size examples held out of the training split,
 * stratified by class and chosen with a fixed seed, so it is the same for
 * every training seed and every run.
 *
 * Class subsets, "SOURCE:LIST" (e.g. "fashion-mnist:0,2,4,6"), keep the
 * listed classes of SOURCE and number them 0..k-1 in the listed order.  A
 * subset's test examples are exactly the source's test examples of those
 * classes (the test part is chosen before the classes are); its
 * validation split is drawn from the subset's own training examples.
 */
#include "data_internal.h"
#include "glyphs.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#define FASHION_DIR "/usr/share/datasets/fashion-mnist"
#define DIGITS_CSV "/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
#define DIGITS_TEST 450
/* Fixed seeds of the splits: part of the dataset's definition, not of a run. */
#define SEED_TEST_SPLIT 0x7e57c0de5eedULL
#define SEED_VAL_SPLIT 0x0a11da7a5eedULL

static const char *const builtins[] = {"fashion-mnist", "digits", "glyphs", "glyphs-digits",
                                       "fashion-hard", NULL};

/* Named class subsets: the hard task of the NetTailor demo is telling apart
 * Fashion-MNIST's four upper-body garments. */
static const struct {
    const char *name, *spec;
} aliases[] = {
    {"fashion-hard", "fashion-mnist:0,2,4,6"},  /* T-shirt/top, Pullover, Coat, Shirt */
};

/* The classes a subset keeps, in the new label order; n == 0: all. */
typedef struct {
    int n;
    int *cls;
} class_subset;

static const char *const fashion_classes[] = {
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
};

const char *const *ntc_dataset_builtins(void) { return builtins; }

void ntc_data_opts_default(ntc_data_opts *o)
{
    memset(o, 0, sizeof *o);
    o->split = NTC_SPLIT_TRAIN;
}

static const char *const split_names[] = {"train", "val", "test", "all"};

const char *ntc_split_name(ntc_split s)
{
    return (unsigned)s < 4 ? split_names[s] : "?";
}

int ntc_split_parse(const char *s, ntc_split *out, ntc_err *err)
{
    for (int i = 0; i < 4; i++)
        if (!strcmp(s, split_names[i])) {
            *out = (ntc_split)i;
            return 0;
        }
    return ntc_error(err, NULL, 0, "unknown split '%s' (expected train, val, test or all)", s);
}

/* ---- the dataset object ---------------------------------------------------- */

ntc_dataset *ntc__dataset_alloc(const char *name)
{
    ntc_dataset *ds = ntc_calloc(1, sizeof *ds);
    if (!ds)
        return NULL;
    ds->name = ntc_strdup(name);
    ds->scale = 1.0f;
    for (int i = 0; i < NTC_DATA_MAX_CH; i++)
        ds->std[i] = 1.0f;
    if (!ds->name) {
        ntc_free(ds);
        return NULL;
    }
    return ds;
}

void ntc_dataset_free(ntc_dataset *ds)
{
    if (!ds)
        return;
    if (ds->class_names)
        for (int i = 0; i < ds->n_classes; i++)
            ntc_free(ds->class_names[i]);
    ntc_free(ds->class_names);
    ntc_free(ds->labels);
    ntc_free(ds->u8);
    ntc_free(ds->f32);
    ntc_free(ds->name);
    ntc_free(ds);
}

size_t ntc_dataset_example_size(const ntc_dataset *ds)
{
    return (size_t)ds->c * (size_t)ds->h * (size_t)ds->w;
}

void ntc_dataset_get(const ntc_dataset *ds, int64_t i, float *x)
{
    size_t hw = (size_t)ds->h * (size_t)ds->w, size = ntc_dataset_example_size(ds);
    for (int ch = 0; ch < ds->c; ch++) {
        /* (raw * scale - mean) / std as one multiply-add per value */
        float a = ds->scale / ds->std[ch], b = -ds->mean[ch] / ds->std[ch];
        float *dst = x + (size_t)ch * hw;
        if (ds->u8) {
            const uint8_t *src = ds->u8 + (size_t)i * size + (size_t)ch * hw;
            for (size_t k = 0; k < hw; k++)
                dst[k] = (float)src[k] * a + b;
        } else {
            const float *src = ds->f32 + (size_t)i * size + (size_t)ch * hw;
            for (size_t k = 0; k < hw; k++)
                dst[k] = src[k] * a + b;
        }
    }
}

void ntc_dataset_fill(const ntc_dataset *ds, const int64_t *idx, int n, float *x, int32_t *y)
{
    size_t size = ntc_dataset_example_size(ds);
    for (int k = 0; k < n; k++) {
        ntc_dataset_get(ds, idx[k], x + (size_t)k * size);
        if (y)
            y[k] = ds->labels[idx[k]];
    }
}

/* ---- checks, splits, conforming, normalisation ----------------------------- */

static int set_class_names(ntc_dataset *ds, const char *const *names, ntc_err *err)
{
    ds->class_names = ntc_calloc((size_t)ds->n_classes, sizeof(char *));
    if (!ds->class_names)
        return ntc_error(err, NULL, 0, "out of memory");
    for (int k = 0; k < ds->n_classes; k++) {
        char num[16];
        snprintf(num, sizeof num, "%d", k);
        ds->class_names[k] = ntc_strdup(names ? names[k] : num);
        if (!ds->class_names[k])
            return ntc_error(err, NULL, 0, "out of memory");
    }
    return 0;
}

/* Labels in [0, n_classes); with check_empty, every class has an example
 * (a gap in user labels almost always means a mislabelled file). */
static int check_labels(const ntc_dataset *ds, const char *where, bool check_empty, ntc_err *err)
{
    int64_t *count = ntc_calloc((size_t)ds->n_classes, sizeof(int64_t));
    if (!count)
        return ntc_error(err, where, 0, "out of memory");
    for (int64_t i = 0; i < ds->n; i++) {
        int32_t l = ds->labels[i];
        if (l < 0 || l >= ds->n_classes) {
            ntc_free(count);
            return ntc_error(err, where, 0, "label %d of example %lld is out of range [0, %d)",
                             l, (long long)i, ds->n_classes);
        }
        count[l]++;
    }
    for (int k = 0; check_empty && k < ds->n_classes; k++)
        if (!count[k]) {
            ntc_free(count);
            return ntc_error(err, where, 0, "class %d has no examples (labels must be 0..%d "
                             "without gaps)", k, ds->n_classes - 1);
        }
    ntc_free(count);
    return 0;
}

/* Marks k of pool[0..n_pool) in picked[]: shuffled with seed, ordered by
 * class, then every (n_pool/k)-th taken, so each class gives its share. */
static int stratified_pick(const ntc_dataset *ds, const int64_t *pool, int64_t n_pool, int64_t k,
                           uint64_t seed, bool *picked)
{
    int64_t *order = ntc_malloc((size_t)(n_pool ? n_pool : 1) * sizeof(int64_t));
    int64_t *by_class = ntc_malloc((size_t)(n_pool ? n_pool : 1) * sizeof(int64_t));
    int64_t *start = ntc_calloc((size_t)ds->n_classes + 1, sizeof(int64_t));
    if (!order || !by_class || !start) {
        ntc_free(order);
        ntc_free(by_class);
        ntc_free(start);
        return -1;
    }
    memcpy(order, pool, (size_t)n_pool * sizeof(int64_t));
    ntc_rng r;
    ntc_rng_seed(&r, seed);
    ntc_rng_shuffle(&r, order, n_pool);
    /* counting sort by label, stable, so the shuffle decides within a class */
    for (int64_t i = 0; i < n_pool; i++)
        start[ds->labels[order[i]] + 1]++;
    for (int c = 0; c < ds->n_classes; c++)
        start[c + 1] += start[c];
    for (int64_t i = 0; i < n_pool; i++)
        by_class[start[ds->labels[order[i]]]++] = order[i];
    int64_t acc = n_pool / 2;
    for (int64_t i = 0; i < n_pool; i++) {
        acc += k;
        if (acc >= n_pool) {
            acc -= n_pool;
            picked[by_class[i]] = true;
        }
    }
    ntc_free(order);
    ntc_free(by_class);
    ntc_free(start);
    return 0;
}

/* Keeps the examples with keep[i] set, in order (in place: the memory
 * stays allocated, which is no worse than the whole file it came from). */
static void keep_examples(ntc_dataset *ds, const bool *keep)
{
    size_t size = ntc_dataset_example_size(ds);
    int64_t m = 0;
    for (int64_t i = 0; i < ds->n; i++) {
        if (!keep[i])
            continue;
        ds->labels[m] = ds->labels[i];
        if (ds->u8)
            memmove(ds->u8 + (size_t)m * size, ds->u8 + (size_t)i * size, size);
        else
            memmove(ds->f32 + (size_t)m * size, ds->f32 + (size_t)i * size, size * sizeof(float));
        m++;
    }
    ds->n = m;
}

/* Keeps the examples of o->split.  test_count > 0: the source has a fixed
 * test part of that size carved out of its one file (digits).  Otherwise
 * the examples loaded are already the right file (fashion-mnist's train or
 * t10k) or a user source, and test and all keep everything.  With a class
 * subset, only its classes' examples are kept (labels unchanged here); the
 * test part is chosen first, over every class, so a subset's test examples
 * are the source's. */
static int select_split(ntc_dataset *ds, const ntc_data_opts *o, int64_t test_count,
                        const class_subset *sub, const char *where, ntc_err *err)
{
    int64_t n = ds->n;
    bool *in_test = ntc_calloc((size_t)n + 1, 1), *in_val = ntc_calloc((size_t)n + 1, 1);
    bool *keep = ntc_calloc((size_t)n + 1, 1);
    bool *in_sub = ntc_calloc((size_t)ds->n_classes + 1, 1);
    int64_t *pool = ntc_malloc(((size_t)n + 1) * sizeof(int64_t));
    int rc = -1;
    if (!in_test || !in_val || !keep || !in_sub || !pool) {
        ntc_error(err, where, 0, "out of memory");
        goto out;
    }
    for (int c = 0; c < ds->n_classes; c++)
        in_sub[c] = sub->n == 0;
    for (int k = 0; k < sub->n; k++)
        in_sub[sub->cls[k]] = true;
    int64_t n_pool = 0;
    if (test_count > 0) {
        for (int64_t i = 0; i < n; i++)
            pool[i] = i;
        if (stratified_pick(ds, pool, n, test_count, SEED_TEST_SPLIT, in_test)) {
            ntc_error(err, where, 0, "out of memory");
            goto out;
        }
    }
    for (int64_t i = 0; i < n; i++)
        if (!in_test[i] && in_sub[ds->labels[i]])
            pool[n_pool++] = i;
    /* the validation size only matters to the splits it is carved from */
    bool from_train = o->split == NTC_SPLIT_TRAIN || o->split == NTC_SPLIT_VAL;
    if (from_train && (o->val_size < 0 || (o->val_size > 0 && o->val_size >= n_pool))) {
        ntc_error(err, where, 0, "validation size %lld must be in [0, %lld) (training examples)",
                  (long long)o->val_size, (long long)n_pool);
        goto out;
    }
    if (o->split == NTC_SPLIT_VAL && o->val_size == 0) {
        ntc_error(err, where, 0, "no validation split: the validation size is 0");
        goto out;
    }
    if (from_train && o->val_size > 0 &&
        stratified_pick(ds, pool, n_pool, o->val_size, SEED_VAL_SPLIT, in_val)) {
        ntc_error(err, where, 0, "out of memory");
        goto out;
    }
    for (int64_t i = 0; i < n; i++) {
        switch (o->split) {
        case NTC_SPLIT_TRAIN: keep[i] = !in_test[i] && !in_val[i]; break;
        case NTC_SPLIT_VAL: keep[i] = in_val[i]; break;
        case NTC_SPLIT_TEST: keep[i] = test_count > 0 ? in_test[i] : true; break;
        case NTC_SPLIT_ALL: keep[i] = true; break;
        }
        keep[i] = keep[i] && in_sub[ds->labels[i]];
    }
    keep_examples(ds, keep);
    rc = 0;
out:
    ntc_free(in_test);
    ntc_free(in_val);
    ntc_free(keep);
    ntc_free(in_sub);
    ntc_free(pool);
    return rc;
}

/* ---- class subsets ----------------------------------------------------------- */

/* Splits "SOURCE:LIST" into an ntc_malloc'ed *base and *sub.  Returns 1 for
 * a subset, 0 when spec is not one (no ':', or text after the last ':' that
 * is not a list of numbers: a path), -1 on a malformed list. */
static int parse_subset(const char *spec, char **base, class_subset *sub, ntc_err *err)
{
    const char *colon = strrchr(spec, ':');
    if (!colon)
        return 0;
    for (const char *p = colon + 1; *p; p++)
        if (!isdigit((unsigned char)*p) && !strchr(", -", *p))
            return 0;
    const char *list = colon + 1;
    if (colon == spec)
        return ntc_error(err, NULL, 0, "data '%s': no source before ':'", spec);
    int cap = 0;
    for (const char *p = list; *p;) {
        while (*p == ' ')
            p++;
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 0 || v > 1000000) {
            ntc_error(err, NULL, 0, "data '%s': bad class list '%s' (expected class indices "
                      "like 0,2,4)", spec, list);
            goto fail;
        }
        for (int k = 0; k < sub->n; k++)
            if (sub->cls[k] == (int)v) {
                ntc_error(err, NULL, 0, "data '%s': class %ld is listed twice", spec, v);
                goto fail;
            }
        if (ntc_grow((void **)&sub->cls, &cap, sub->n + 1, sizeof(int))) {
            ntc_error(err, NULL, 0, "out of memory");
            goto fail;
        }
        sub->cls[sub->n++] = (int)v;
        p = end;
        while (*p == ' ')
            p++;
        if (*p == ',' && p[1] && p[1] != ',')
            p++;
        else if (*p) {
            ntc_error(err, NULL, 0, "data '%s': bad class list '%s' (expected class indices "
                      "like 0,2,4)", spec, list);
            goto fail;
        }
    }
    if (sub->n == 0)
        return ntc_error(err, NULL, 0, "data '%s': empty class list after ':' (expected class "
                         "indices like 0,2,4)", spec);
    *base = ntc_malloc((size_t)(colon - spec) + 1);
    if (!*base) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    memcpy(*base, spec, (size_t)(colon - spec));
    (*base)[colon - spec] = 0;
    return 1;
fail:
    ntc_free(sub->cls);
    *sub = (class_subset){0};
    return -1;
}

static int check_subset(const ntc_dataset *ds, const class_subset *sub, const char *where,
                        ntc_err *err)
{
    for (int k = 0; k < sub->n; k++)
        if (sub->cls[k] >= ds->n_classes)
            return ntc_error(err, where, 0, "class %d of the subset is out of range: %s has %d "
                             "classes (0..%d)", sub->cls[k], ds->name, ds->n_classes,
                             ds->n_classes - 1);
    return 0;
}

/* Numbers the subset's classes 0..k-1 in its order (the examples of other
 * classes are gone already); class names follow their classes. */
static int relabel_subset(ntc_dataset *ds, const class_subset *sub, const char *where, ntc_err *err)
{
    if (sub->n == 0)
        return 0;
    int *new_label = ntc_malloc((size_t)ds->n_classes * sizeof(int));
    char **names = ntc_calloc((size_t)sub->n, sizeof(char *));
    if (!new_label || !names) {
        ntc_free(new_label);
        ntc_free(names);
        return ntc_error(err, where, 0, "out of memory");
    }
    for (int c = 0; c < ds->n_classes; c++)
        new_label[c] = -1;
    for (int k = 0; k < sub->n; k++) {
        new_label[sub->cls[k]] = k;
        names[k] = ds->class_names[sub->cls[k]];
        ds->class_names[sub->cls[k]] = NULL;
    }
    for (int64_t i = 0; i < ds->n; i++)
        ds->labels[i] = new_label[ds->labels[i]];
    for (int c = 0; c < ds->n_classes; c++)
        ntc_free(ds->class_names[c]);
    ntc_free(ds->class_names);
    ntc_free(new_label);
    ds->class_names = names;
    ds->n_classes = sub->n;
    return 0;
}

/* Converts the images to o's [C,H,W] when they differ (allowed when
 * o->resize or always_resize), keeping them as they are otherwise. */
static int conform(ntc_dataset *ds, const ntc_data_opts *o, bool always_resize,
                   const char *where, ntc_err *err)
{
    int c = o->channels ? o->channels : ds->c;
    int h = o->height ? o->height : ds->h;
    int w = o->width ? o->width : ds->w;
    if (c <= 0 || h <= 0 || w <= 0 || c > NTC_DATA_MAX_CH)
        return ntc_error(err, where, 0, "bad input shape %dx%dx%d (channels 1..%d)",
                         c, h, w, NTC_DATA_MAX_CH);
    if (c == ds->c && h == ds->h && w == ds->w)
        return 0;
    if (!o->resize && !always_resize)
        return ntc_error(err, where, 0, "images are %dx%dx%d but the input shape is %dx%dx%d "
                         "(enable resizing to resample them)", ds->c, ds->h, ds->w, c, h, w);
    if (!ntc__channels_convertible(ds->c, c))
        return ntc_error(err, where, 0, "cannot convert %d-channel images to %d channels",
                         ds->c, c);
    size_t in_size = ntc_dataset_example_size(ds), out_size = (size_t)c * h * w;
    float *dst = ntc_malloc(((size_t)ds->n * out_size + 1) * sizeof(float));
    float *tmp = ntc_malloc(in_size * sizeof(float));
    if (!dst || !tmp) {
        ntc_free(dst);
        ntc_free(tmp);
        return ntc_error(err, where, 0, "out of memory resampling %lld images",
                         (long long)ds->n);
    }
    for (int64_t i = 0; i < ds->n; i++) {
        for (size_t k = 0; k < in_size; k++)
            tmp[k] = (ds->u8 ? (float)ds->u8[(size_t)i * in_size + k]
                             : ds->f32[(size_t)i * in_size + k]) * ds->scale;
        ntc__conform_image(tmp, ds->c, ds->h, ds->w, dst + (size_t)i * out_size, c, h, w);
    }
    ntc_free(tmp);
    ntc_free(ds->u8);
    ntc_free(ds->f32);
    ds->u8 = NULL;
    ds->f32 = dst;
    ds->scale = 1.0f;
    /* a default mean/std given for one channel carries over to replicated ones */
    for (int ch = ds->c; ch < c; ch++) {
        ds->mean[ch] = ds->mean[0];
        ds->std[ch] = ds->std[0];
    }
    ds->c = c;
    ds->h = h;
    ds->w = w;
    return 0;
}

/* Applies o's normalisation over the source default already in ds. */
static int set_norm(ntc_dataset *ds, const ntc_data_opts *o, const char *where, ntc_err *err)
{
    if (o->n_norm != 0 && o->n_norm != 1 && o->n_norm != ds->c)
        return ntc_error(err, where, 0, "normalisation has %d mean/std pairs: give 1 (for all "
                         "channels) or %d (one per channel)", o->n_norm, ds->c);
    for (int ch = 0; o->n_norm && ch < ds->c; ch++) {
        int k = o->n_norm == 1 ? 0 : ch;
        ds->mean[ch] = o->mean[k];
        ds->std[ch] = o->std[k];
    }
    for (int ch = 0; ch < ds->c; ch++)
        if (!(ds->std[ch] > 0))
            return ntc_error(err, where, 0, "normalisation std of channel %d must be > 0", ch);
    return 0;
}

/* Steps 1-4 of the file comment (and the class subset); frees ds on error. */
static ntc_dataset *finish(ntc_dataset *ds, const ntc_data_opts *o, const class_subset *sub,
                           int64_t test_count, bool user, bool always_resize, const char *where,
                           ntc_err *err)
{
    if (!ds)
        return NULL;
    if (check_labels(ds, where, user, err) ||
        (!ds->class_names && set_class_names(ds, NULL, err)) ||
        check_subset(ds, sub, where, err) ||
        select_split(ds, o, test_count, sub, where, err) ||
        relabel_subset(ds, sub, where, err) ||
        conform(ds, o, always_resize, where, err) ||
        set_norm(ds, o, where, err))
        goto fail;
    char *name = ntc_malloc(strlen(ds->name) + 8);
    if (!name) {
        ntc_error(err, where, 0, "out of memory");
        goto fail;
    }
    sprintf(name, "%s/%s", ds->name, ntc_split_name(o->split));
    ntc_free(ds->name);
    ds->name = name;
    return ds;
fail:
    ntc_dataset_free(ds);
    return NULL;
}

/* ---- sources ---------------------------------------------------------------- */

/* Takes images [n,H,W] or [n,C,H,W] (uint8 or float32) and labels [n]
 * (uint8/int32/int64) into ds.  paths name the files for errors. */
static int take_arrays(ntc_dataset *ds, ntc_array *im, ntc_array *lb, const char *im_path,
                       const char *lb_path, ntc_err *err)
{
    if (im->dtype != NTC_DT_U8 && im->dtype != NTC_DT_F32)
        return ntc_error(err, im_path, 0, "images must be uint8 or float32, not %s",
                         ntc_dtype_name(im->dtype));
    if (im->shape.rank != 3 && im->shape.rank != 4)
        return ntc_error(err, im_path, 0, "images must be [n,H,W] or [n,C,H,W], not rank %d",
                         im->shape.rank);
    if (lb->dtype == NTC_DT_F32 || lb->shape.rank != 1)
        return ntc_error(err, lb_path, 0, "labels must be a 1-D integer array, not %s of rank %d",
                         ntc_dtype_name(lb->dtype), lb->shape.rank);
    int64_t n = im->shape.dims[0];
    if (lb->shape.dims[0] != n)
        return ntc_error(err, lb_path, 0, "%lld labels for %lld images (%s)",
                         (long long)lb->shape.dims[0], (long long)n, im_path);
    if (n == 0)
        return ntc_error(err, im_path, 0, "no examples");
    const int64_t *d = im->shape.dims;
    int64_t c = im->shape.rank == 4 ? d[1] : 1, h = d[im->shape.rank - 2], w = d[im->shape.rank - 1];
    if (c < 1 || c > NTC_DATA_MAX_CH || h < 1 || w < 1 || h > 65536 || w > 65536)
        return ntc_error(err, im_path, 0, "bad image shape %lldx%lldx%lld (channels 1..%d)",
                         (long long)c, (long long)h, (long long)w, NTC_DATA_MAX_CH);
    int32_t *labels = ntc_malloc((size_t)n * sizeof(int32_t));
    if (!labels)
        return ntc_error(err, lb_path, 0, "out of memory");
    int64_t max = -1;
    for (int64_t i = 0; i < n; i++) {
        int64_t v = lb->dtype == NTC_DT_U8 ? ((uint8_t *)lb->data)[i]
                  : lb->dtype == NTC_DT_I32 ? ((int32_t *)lb->data)[i]
                                            : ((int64_t *)lb->data)[i];
        if (v < 0 || v > INT32_MAX) {
            ntc_free(labels);
            return ntc_error(err, lb_path, 0, "label %lld of example %lld is negative or too large",
                             (long long)v, (long long)i);
        }
        labels[i] = (int32_t)v;
        if (v > max)
            max = v;
    }
    ds->n = n;
    ds->c = (int)c;
    ds->h = (int)h;
    ds->w = (int)w;
    ds->labels = labels;
    if (!ds->n_classes && max >= (1 << 20))
        return ntc_error(err, lb_path, 0, "label %lld is implausibly large for a class index",
                         (long long)max);
    if (!ds->n_classes)
        ds->n_classes = (int)max + 1;
    if (im->dtype == NTC_DT_U8) {
        ds->u8 = im->data;
        ds->scale = 1.0f / 255.0f;
    } else {
        ds->f32 = im->data;
        ds->scale = 1.0f;
    }
    im->data = NULL;
    return 0;
}

static int read_any(const char *path, ntc_array *a, ntc_err *err)
{
    size_t len = strlen(path);
    if (len >= 4 && !strcmp(path + len - 4, ".npy"))
        return ntc_npy_read(path, a, err);
    return ntc_idx_read(path, a, err);
}

/* "IMAGES,LABELS": .npy files by extension, IDX (gzipped or not) otherwise. */
static ntc_dataset *load_pair(const char *spec, const ntc_data_opts *o, const class_subset *sub,
                              ntc_err *err)
{
    char *im_path = ntc_strdup(spec);
    if (!im_path) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    char *comma = strchr(im_path, ',');
    *comma = 0;
    const char *lb_path = comma + 1;
    if (!*im_path || !*lb_path || strchr(lb_path, ',')) {
        ntc_error(err, NULL, 0, "data '%s': expected IMAGES,LABELS (two files)", spec);
        ntc_free(im_path);
        return NULL;
    }
    ntc_array im = {0}, lb = {0};
    ntc_dataset *ds = ntc__dataset_alloc(im_path);
    if (!ds)
        ntc_error(err, NULL, 0, "out of memory");
    else if (read_any(im_path, &im, err) || read_any(lb_path, &lb, err) ||
             take_arrays(ds, &im, &lb, im_path, lb_path, err)) {
        ntc_dataset_free(ds);
        ds = NULL;
    }
    ntc_array_free(&im);
    ntc_array_free(&lb);
    ds = finish(ds, o, sub, 0, true, false, im_path, err);
    ntc_free(im_path);
    return ds;
}

static ntc_dataset *load_fashion(const ntc_data_opts *o, const class_subset *sub, ntc_err *err)
{
    if (o->split == NTC_SPLIT_ALL) {
        ntc_error(err, NULL, 0, "fashion-mnist has separate train and test files: "
                  "choose the train, val or test split");
        return NULL;
    }
    const char *part = o->split == NTC_SPLIT_TEST ? "t10k" : "train";
    char im_path[256], lb_path[256];
    snprintf(im_path, sizeof im_path, "%s/%s-images-idx3-ubyte.gz", FASHION_DIR, part);
    snprintf(lb_path, sizeof lb_path, "%s/%s-labels-idx1-ubyte.gz", FASHION_DIR, part);
    struct stat st;
    if (stat(im_path, &st) != 0) {
        ntc_error(err, im_path, 0, "not found: install the Debian package dataset-fashion-mnist");
        return NULL;
    }
    ntc_array im = {0}, lb = {0};
    ntc_dataset *ds = ntc__dataset_alloc("fashion-mnist");
    if (!ds) {
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    ds->n_classes = 10;
    ds->mean[0] = 0.2860f;
    ds->std[0] = 0.3530f;
    if (ntc_idx_read(im_path, &im, err) || ntc_idx_read(lb_path, &lb, err) ||
        take_arrays(ds, &im, &lb, im_path, lb_path, err) ||
        set_class_names(ds, fashion_classes, err)) {
        ntc_dataset_free(ds);
        ds = NULL;
    }
    ntc_array_free(&im);
    ntc_array_free(&lb);
    return finish(ds, o, sub, 0, false, false, im_path, err);
}

/* One CSV row: 64 pixel values 0..16 and a label 0..9. */
static int parse_digits_row(char *line, uint8_t *pix, int32_t *label)
{
    char *s = line;
    for (int k = 0; k < 65; k++) {
        char *end;
        double v = strtod(s, &end);
        if (end == s || v != (double)(int)v || v < 0 || v > (k < 64 ? 16 : 9))
            return -1;
        if (k < 64)
            pix[k] = (uint8_t)v;
        else
            *label = (int32_t)v;
        s = end;
        if (k < 64 && *s++ != ',')
            return -1;
    }
    while (*s == '\r' || *s == '\n' || *s == ' ')
        s++;
    return *s ? -1 : 0;
}

static ntc_dataset *load_digits(const ntc_data_opts *o, const class_subset *sub, ntc_err *err)
{
    gzFile f = gzopen(DIGITS_CSV, "rb");
    if (!f) {
        ntc_error(err, DIGITS_CSV, 0, "cannot open (%s): install the Debian package python3-sklearn",
                  errno ? strerror(errno) : "out of memory");
        return NULL;
    }
    ntc_dataset *ds = ntc__dataset_alloc("digits");
    int pix_cap = 0, label_cap = 0, line_no = 0;
    char line[1024];
    if (!ds) {
        ntc_error(err, NULL, 0, "out of memory");
        goto fail;
    }
    ds->c = 1;
    ds->h = ds->w = 8;
    ds->n_classes = 10;
    ds->scale = 1.0f / 16.0f;
    ds->mean[0] = 0.3053f;
    ds->std[0] = 0.3760f;
    while (gzgets(f, line, sizeof line)) {
        line_no++;
        if (line[0] == '\n' || line[0] == 0)
            continue;
        int need = (int)ds->n + 1;
        if (ntc_grow((void **)&ds->u8, &pix_cap, need, 64) ||
            ntc_grow((void **)&ds->labels, &label_cap, need, sizeof(int32_t))) {
            ntc_error(err, NULL, 0, "out of memory");
            goto fail;
        }
        if (parse_digits_row(line, ds->u8 + ds->n * 64, &ds->labels[ds->n])) {
            ntc_error(err, DIGITS_CSV, line_no, "expected 64 integers 0..16 and a label 0..9");
            goto fail;
        }
        ds->n++;
    }
    int zerr;
    gzerror(f, &zerr);
    if (zerr != Z_OK && zerr != Z_STREAM_END) {
        ntc_error(err, DIGITS_CSV, 0, "corrupt gzip data");
        goto fail;
    }
    gzclose(f);
    if (ds->n <= DIGITS_TEST) {
        ntc_error(err, DIGITS_CSV, 0, "only %lld rows", (long long)ds->n);
        ntc_dataset_free(ds);
        return NULL;
    }
    return finish(ds, o, sub, DIGITS_TEST, false, true, DIGITS_CSV, err);
fail:
    gzclose(f);
    ntc_dataset_free(ds);
    return NULL;
}

ntc_dataset *ntc_dataset_from_arrays(const char *name, const ntc_array *images,
                                     const ntc_array *labels, int n_classes,
                                     const ntc_data_opts *o, ntc_err *err)
{
    ntc_array im = *images, lb = *labels;
    size_t bytes = (size_t)ntc_array_numel(images) * ntc_dtype_size(images->dtype);
    im.data = ntc_malloc(bytes ? bytes : 1);
    ntc_dataset *ds = ntc__dataset_alloc(name);
    if (!im.data || !ds) {
        ntc_free(im.data);
        ntc_dataset_free(ds);
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    memcpy(im.data, images->data, bytes);
    ds->n_classes = n_classes;
    if (take_arrays(ds, &im, &lb, name, name, err)) {
        ntc_free(im.data);
        ntc_dataset_free(ds);
        return NULL;
    }
    const class_subset all = {0};
    return finish(ds, o, &all, 0, true, false, name, err);
}

/* Opens o->source, which is not an alias; sub selects classes (n 0: all). */
static ntc_dataset *open_source(const ntc_data_opts *o, const class_subset *sub, ntc_err *err)
{
    const char *src = o->source;
    if (!strcmp(src, "fashion-mnist"))
        return load_fashion(o, sub, err);
    if (!strcmp(src, "digits"))
        return load_digits(o, sub, err);
    if (!strcmp(src, "glyphs") || !strcmp(src, "glyphs-digits"))
        return finish(ntc__glyphs_load(!strcmp(src, "glyphs-digits"), o, err), o, sub, 0, false,
                      false, src, err);
    if (strchr(src, ','))
        return load_pair(src, o, sub, err);
    struct stat st;
    if (stat(src, &st) == 0 && S_ISDIR(st.st_mode))
        return finish(ntc__png_folder_load(src, o, err), o, sub, 0, true, true, src, err);
    ntc_error(err, NULL, 0, "unknown data source '%s': expected fashion-mnist, digits, glyphs, "
              "glyphs-digits, fashion-hard, a directory with one subdirectory of PNG images per "
              "class, or IMAGES,LABELS (.npy or IDX files), optionally followed by :CLASSES "
              "(e.g. fashion-mnist:0,2,4,6)", src);
    return NULL;
}

/* Names a subset's dataset after what the user asked for ("fashion-hard/test"). */
static int rename_dataset(ntc_dataset *ds, const char *spec, ntc_split split, ntc_err *err)
{
    char *name = ntc_malloc(strlen(spec) + 8);
    if (!name)
        return ntc_error(err, NULL, 0, "out of memory");
    sprintf(name, "%s/%s", spec, ntc_split_name(split));
    ntc_free(ds->name);
    ds->name = name;
    return 0;
}

/* What alias `name` stands for; NULL when it is not one. */
static const char *alias_spec(const char *name)
{
    for (size_t i = 0; i < sizeof aliases / sizeof aliases[0]; i++)
        if (!strcmp(name, aliases[i].name))
            return aliases[i].spec;
    return NULL;
}

/* A subset of an alias ("fashion-hard:3,0") is a subset of the alias's
 * source: the listed indices are the alias's class numbers, mapped to the
 * source's, and *base becomes the source. */
static int compose_alias(char **base, class_subset *sub, ntc_err *err)
{
    const char *spec = alias_spec(*base);
    if (!spec)
        return 0;
    char *inner_base = NULL;
    class_subset inner = {0};
    if (parse_subset(spec, &inner_base, &inner, err) != 1)
        return -1;                   /* every alias is a subset; only memory can fail */
    for (int k = 0; k < sub->n; k++) {
        if (sub->cls[k] >= inner.n) {
            ntc_error(err, NULL, 0, "class %d of the subset is out of range: %s has %d classes "
                      "(0..%d)", sub->cls[k], *base, inner.n, inner.n - 1);
            ntc_free(inner_base);
            ntc_free(inner.cls);
            return -1;
        }
        sub->cls[k] = inner.cls[sub->cls[k]];
    }
    ntc_free(*base);
    *base = inner_base;
    ntc_free(inner.cls);
    return 0;
}

ntc_dataset *ntc_dataset_open(const ntc_data_opts *o, ntc_err *err)
{
    if (!o->source || !*o->source) {
        ntc_error(err, NULL, 0, "no data source given");
        return NULL;
    }
    const char *spec = alias_spec(o->source) ? alias_spec(o->source) : o->source;
    char *base = NULL;
    class_subset sub = {0};
    int is_subset = parse_subset(spec, &base, &sub, err);
    if (is_subset < 0)
        return NULL;
    if (is_subset && compose_alias(&base, &sub, err)) {
        ntc_free(base);
        ntc_free(sub.cls);
        return NULL;
    }
    ntc_data_opts base_opts = *o;
    if (is_subset)
        base_opts.source = base;
    else
        base_opts.source = spec;
    ntc_dataset *ds = open_source(&base_opts, &sub, err);
    if (ds && is_subset && rename_dataset(ds, o->source, o->split, err)) {
        ntc_dataset_free(ds);
        ds = NULL;
    }
    ntc_free(base);
    ntc_free(sub.cls);
    return ds;
}
