/* ntc/data.h - arrays, NumPy .npy and IDX files, datasets and mini-batches.
 *
 * Three layers, each usable alone:
 *
 *   ntc_array     a dense C-order array (float32, uint8, int32 or int64)
 *                 read from / written to .npy, or read from IDX files.
 *   ntc_dataset   labelled images ready for a graph: a source ("fashion-mnist",
 *                 "digits", "glyphs", a folder of PNGs per class, a pair of
 *                 .npy or IDX files, or a class subset "SOURCE:0,2,4")
 *                 conformed to the graph's input shape [C,H,W], with a
 *                 split (train / val / test / all) and a normalisation.
 *   ntc_batcher   an epoch-by-epoch iterator over a dataset that writes
 *                 normalised float32 NCHW mini-batches into caller buffers,
 *                 optionally shuffled and augmented, reproducible from a seed.
 *
 * Tutorial (training loop):
 *
 *   ntc_data_opts o;
 *   ntc_data_opts_default(&o);
 *   o.source = "fashion-mnist";
 *   o.split = NTC_SPLIT_TRAIN;
 *   o.val_size = 5000;                       // train = 55000, val = 5000
 *   o.channels = 1; o.height = 28; o.width = 28;   // graph input N,1,28,28
 *   ntc_dataset *ds = ntc_dataset_open(&o, &err);
 *
 *   ntc_batch_opts bo = {.batch = 128, .shuffle = true, .seed = 1,
 *                        .aug = {.pad = 2}};
 *   ntc_batcher *b = ntc_batcher_new(ds, &bo, &err);
 *   float *x = malloc(128 * ntc_dataset_example_size(ds) * sizeof(float));
 *   int32_t y[128];
 *   for (int ep = 0; ep < epochs; ep++) {
 *       int n;
 *       while ((n = ntc_batcher_next(b, x, y)) > 0)
 *           step(x, y, n);                    // n <= 128; the last may be short
 *       save(ntc_batcher_get_state(b));       // resume: ntc_batcher_set_state
 *   }
 *
 * Storage: uint8 sources (Fashion-MNIST, PNG, uint8 .npy) stay uint8 in
 * memory (47 MB for Fashion-MNIST train instead of 188 MB as float32) and
 * are converted and normalised per batch; float sources and resampled
 * images are kept as float32 in [0,1] (or the file's own range for float
 * .npy).  Normalisation is x = (raw * scale - mean[c]) / std[c], where scale
 * maps the source to [0,1] (1/255 for uint8, 1/16 for digits, 1 for float).
 */
#ifndef NTC_DATA_H
#define NTC_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ntc/ir.h"
#include "ntc/rng.h"
#include "ntc/util.h"

/* ---- arrays, .npy and IDX ---------------------------------------------- */

typedef enum {
    NTC_DT_F32,                  /* "<f4" */
    NTC_DT_U8,                   /* "|u1" */
    NTC_DT_I32,                  /* "<i4" (labels only) */
    NTC_DT_I64,                  /* "<i8" (labels only) */
} ntc_dtype;

/* A dense C-order array; data is ntc_malloc'ed and owned by the array.
 * shape.dims are all concrete (never NTC_BATCH); rank 0 is a scalar. */
typedef struct {
    ntc_dtype dtype;
    ntc_shape shape;
    void *data;
} ntc_array;

size_t ntc_dtype_size(ntc_dtype t);          /* bytes per element */
const char *ntc_dtype_name(ntc_dtype t);     /* "float32", "uint8", ... */
int64_t ntc_array_numel(const ntc_array *a); /* product of dims (1 for rank 0) */
/* Frees a->data and zeroes *a; safe on a zeroed array. */
void ntc_array_free(ntc_array *a);

/* Reads a .npy file (format 1.0, 2.0 or 3.0 header) holding float32, uint8,
 * int32 or int64 in C order, little-endian (or byte-order-free for uint8).
 * Anything else (Fortran order, big-endian, other dtypes, bad magic or
 * header, truncated data, trailing bytes) fails with an error naming the
 * path and the reason.  On success *out owns the data; 0 ok, -1 error. */
int ntc_npy_read(const char *path, ntc_array *out, ntc_err *err);

/* Writes a as a .npy file (format 1.0, or 2.0 when the header needs it),
 * atomically (temp file + rename).  0 ok, -1 error. */
int ntc_npy_write(const char *path, const ntc_array *a, ntc_err *err);

/* Reads an IDX file (the MNIST family), gzip-compressed or not: the
 * big-endian header 00 00 08 RANK then RANK big-endian uint32 dims, then
 * uint8 data.  Only the uint8 type (0x08) is accepted.  0 ok, -1 error. */
int ntc_idx_read(const char *path, ntc_array *out, ntc_err *err);

/* ---- datasets ------------------------------------------------------------ */

typedef enum {
    NTC_SPLIT_TRAIN,             /* training examples, minus val_size held out */
    NTC_SPLIT_VAL,               /* the held-out val_size examples of train */
    NTC_SPLIT_TEST,              /* the test set (a user source: all of it) */
    NTC_SPLIT_ALL,               /* every example of the source */
} ntc_split;

const char *ntc_split_name(ntc_split s);     /* "train", "val", "test", "all" */
/* "train"/"val"/"test"/"all" -> *out; 0 ok, -1 unknown (err says which). */
int ntc_split_parse(const char *s, ntc_split *out, ntc_err *err);

#define NTC_DATA_MAX_CH 4

typedef struct {
    /* "fashion-mnist", "digits", "glyphs" (letters rendered from installed
     * fonts), "glyphs-digits", a directory of class subdirectories of PNGs,
     * or "IMAGES,LABELS" (two .npy files, or two IDX files); any of them
     * followed by ":LIST" keeps only the classes LIST (indices, e.g.
     * "fashion-mnist:0,2,4,6"), numbered 0..k-1 in that order.
     * "fashion-hard" is "fashion-mnist:0,2,4,6".  See docs/data.md. */
    const char *source;
    ntc_split split;
    /* The graph's input [C,H,W]; 0 means "whatever the data has". */
    int channels, height, width;
    /* Resample (bilinear) and convert channels when the data's [C,H,W]
     * differs from the requested one.  Without it a mismatch is an error.
     * digits and PNG folders always resample (that is what they are for). */
    bool resize;
    /* Examples held out of the training set for NTC_SPLIT_VAL, chosen with
     * a fixed seed (so they never depend on the training seed).  0 = none. */
    int64_t val_size;
    /* Normalisation: n_norm 0 = the dataset's documented default; 1 = the
     * same mean/std for every channel; C = one pair per channel. */
    int n_norm;
    float mean[NTC_DATA_MAX_CH], std[NTC_DATA_MAX_CH];
} ntc_data_opts;

/* Defaults: split train, no val, no resize, shape from the data, default norm. */
void ntc_data_opts_default(ntc_data_opts *o);

/* Labelled images of one split.  Fields are read-only for users. */
typedef struct {
    char *name;                  /* e.g. "fashion-mnist/test" */
    int64_t n;                   /* examples */
    int c, h, w;                 /* shape of one example (the graph's input) */
    int n_classes;
    char **class_names;          /* n_classes names ("0".."9", folder names, ...) */
    int32_t *labels;             /* n labels in [0, n_classes) */
    float mean[NTC_DATA_MAX_CH], std[NTC_DATA_MAX_CH];  /* effective, per channel */
    /* storage: exactly one of u8 / f32 is set, n*c*h*w values */
    uint8_t *u8;
    float *f32;
    float scale;                 /* raw value -> [0,1] before mean/std */
} ntc_dataset;

/* Loads o->source, conforms it to o's shape and selects o->split.  Errors
 * (missing files, bad files, shape mismatch, labels out of range, empty
 * classes, an unknown source) name the file and the reason.  NULL on error. */
ntc_dataset *ntc_dataset_open(const ntc_data_opts *o, ntc_err *err);

/* Builds a dataset from in-memory arrays (copied): images uint8 or float32
 * [n,C,H,W] or [n,H,W]; labels uint8/int32/int64 [n].  n_classes 0 means
 * max(label)+1.  o supplies shape, resize, split, val_size and norm
 * (NTC_SPLIT_TEST/ALL select every example).  NULL on error. */
ntc_dataset *ntc_dataset_from_arrays(const char *name, const ntc_array *images,
                                     const ntc_array *labels, int n_classes,
                                     const ntc_data_opts *o, ntc_err *err);

void ntc_dataset_free(ntc_dataset *ds);

/* The built-in source names, NULL-terminated (for --help). */
const char *const *ntc_dataset_builtins(void);

/* Values per example: c*h*w. */
size_t ntc_dataset_example_size(const ntc_dataset *ds);

/* Writes example i, normalised, to x (example_size floats). */
void ntc_dataset_get(const ntc_dataset *ds, int64_t i, float *x);

/* Writes examples idx[0..n) to x [n,C,H,W] and their labels to y (y may be NULL). */
void ntc_dataset_fill(const ntc_dataset *ds, const int64_t *idx, int n, float *x, int32_t *y);

/* ---- augmentation ---------------------------------------------------------- */

/* Random augmentation of training images; all off when zeroed. */
typedef struct {
    int pad;                     /* random crop: zero-pad by pad, crop back to HxW */
    bool hflip;                  /* random horizontal flip (wrong for characters) */
} ntc_augment;

/* Augments one normalised example x [c,h,w] in place.  Padding is black
 * (raw 0), i.e. fill[ch] = (0 - mean)/std in normalised units.  scratch
 * holds c*h*w floats.  Draws from r. */
void ntc_augment_apply(const ntc_augment *a, ntc_rng *r, float *x, int c, int h, int w,
                       const float *fill, float *scratch);

/* ---- mini-batches ---------------------------------------------------------- */

typedef struct {
    int batch;                   /* examples per batch (> 0) */
    bool shuffle;                /* new permutation each epoch */
    bool drop_last;              /* skip the last short batch of an epoch */
    uint64_t seed;               /* shuffling and augmentation */
    ntc_augment aug;
} ntc_batch_opts;

/* Where an iteration is: a resumed batcher with the same dataset, options
 * and state produces exactly the batches the original would have. */
typedef struct {
    int64_t epoch;               /* epochs completed */
    int64_t pos;                 /* examples consumed in the current epoch */
} ntc_batcher_state;

typedef struct ntc_batcher ntc_batcher;

/* A batcher over ds (which must outlive it).  NULL on error (bad options). */
ntc_batcher *ntc_batcher_new(const ntc_dataset *ds, const ntc_batch_opts *o, ntc_err *err);
void ntc_batcher_free(ntc_batcher *b);

/* Writes the next mini-batch to x [n,C,H,W] and y [n] (buffers sized for
 * o->batch) and returns n > 0; returns 0 once at the end of each epoch
 * (the next call starts the next epoch).  Epoch e's permutation and each
 * batch's augmentation derive from (seed, e, batch index) only, so the
 * state below is all a resume needs. */
int ntc_batcher_next(ntc_batcher *b, float *x, int32_t *y);

/* Batches per epoch. */
int64_t ntc_batcher_batches_per_epoch(const ntc_batcher *b);
/* Indices (into the dataset) of the examples of the last batch returned. */
const int64_t *ntc_batcher_last_indices(const ntc_batcher *b);

ntc_batcher_state ntc_batcher_get_state(const ntc_batcher *b);
/* Restores a state; -1 if pos is not a batch boundary or beyond the epoch. */
int ntc_batcher_set_state(ntc_batcher *b, ntc_batcher_state s, ntc_err *err);

#endif
