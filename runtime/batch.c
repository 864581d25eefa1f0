/* Mini-batch iteration over a dataset.
 *
 * Reproducibility without saved generator state: epoch e's permutation is
 * drawn from the stream (seed, e) and batch k's augmentation from
 * (seed, e, k), so any (epoch, position) can be re-entered exactly; the
 * batcher's whole state is those two numbers.
 */
#include "ntc/data.h"

#include <string.h>

/* Stream tag of the shuffles, apart from every batch index. */
#define SHUFFLE_STREAM UINT64_MAX

struct ntc_batcher {
    const ntc_dataset *ds;
    ntc_batch_opts o;
    int64_t epoch, pos;
    int64_t *order;              /* permutation of the current epoch */
    int64_t order_epoch;         /* which epoch order[] is for; -1 none */
    const int64_t *last;         /* the examples of the last batch */
    float *scratch;              /* one example, for augmentation */
    float fill[NTC_DATA_MAX_CH]; /* normalised black, the crop padding */
};

ntc_batcher *ntc_batcher_new(const ntc_dataset *ds, const ntc_batch_opts *o, ntc_err *err)
{
    if (o->batch <= 0) {
        ntc_error(err, NULL, 0, "batch size must be positive, not %d", o->batch);
        return NULL;
    }
    if (o->aug.pad < 0 || o->aug.pad > ds->h || o->aug.pad > ds->w) {
        ntc_error(err, NULL, 0, "crop padding %d must be in [0, %d]", o->aug.pad,
                  ds->h < ds->w ? ds->h : ds->w);
        return NULL;
    }
    if (o->drop_last && ds->n < o->batch) {
        ntc_error(err, NULL, 0, "%s has %lld examples: not one full batch of %d",
                  ds->name, (long long)ds->n, o->batch);
        return NULL;
    }
    ntc_batcher *b = ntc_calloc(1, sizeof *b);
    if (b) {
        b->order = ntc_malloc(((size_t)ds->n + 1) * sizeof(int64_t));
        b->scratch = ntc_malloc((ntc_dataset_example_size(ds) + 1) * sizeof(float));
    }
    if (!b || !b->order || !b->scratch) {
        ntc_batcher_free(b);
        ntc_error(err, NULL, 0, "out of memory");
        return NULL;
    }
    b->ds = ds;
    b->o = *o;
    b->order_epoch = -1;
    b->last = b->order;
    for (int ch = 0; ch < ds->c; ch++)
        b->fill[ch] = -ds->mean[ch] / ds->std[ch];
    return b;
}

void ntc_batcher_free(ntc_batcher *b)
{
    if (!b)
        return;
    ntc_free(b->order);
    ntc_free(b->scratch);
    ntc_free(b);
}

static void make_order(ntc_batcher *b)
{
    for (int64_t i = 0; i < b->ds->n; i++)
        b->order[i] = i;
    if (b->o.shuffle) {
        ntc_rng r;
        ntc_rng_seed3(&r, b->o.seed, (uint64_t)b->epoch, SHUFFLE_STREAM);
        ntc_rng_shuffle(&r, b->order, b->ds->n);
    }
    b->order_epoch = b->epoch;
}

int ntc_batcher_next(ntc_batcher *b, float *x, int32_t *y)
{
    const ntc_dataset *ds = b->ds;
    int64_t left = ds->n - b->pos;
    if (left <= 0 || (b->o.drop_last && left < b->o.batch)) {
        b->epoch++;
        b->pos = 0;
        return 0;
    }
    if (b->order_epoch != b->epoch)
        make_order(b);
    int m = left < b->o.batch ? (int)left : b->o.batch;
    const int64_t *idx = b->order + b->pos;
    ntc_dataset_fill(ds, idx, m, x, y);
    if (b->o.aug.pad > 0 || b->o.aug.hflip) {
        ntc_rng r;
        ntc_rng_seed3(&r, b->o.seed, (uint64_t)b->epoch, (uint64_t)(b->pos / b->o.batch));
        size_t size = ntc_dataset_example_size(ds);
        for (int k = 0; k < m; k++)
            ntc_augment_apply(&b->o.aug, &r, x + (size_t)k * size, ds->c, ds->h, ds->w,
                              b->fill, b->scratch);
    }
    b->last = idx;
    b->pos += m;
    return m;
}

int64_t ntc_batcher_batches_per_epoch(const ntc_batcher *b)
{
    int64_t n = b->ds->n, bs = b->o.batch;
    return b->o.drop_last ? n / bs : (n + bs - 1) / bs;
}

const int64_t *ntc_batcher_last_indices(const ntc_batcher *b) { return b->last; }

ntc_batcher_state ntc_batcher_get_state(const ntc_batcher *b)
{
    return (ntc_batcher_state){.epoch = b->epoch, .pos = b->pos};
}

int ntc_batcher_set_state(ntc_batcher *b, ntc_batcher_state s, ntc_err *err)
{
    if (s.epoch < 0 || s.pos < 0 || s.pos > b->ds->n || (s.pos % b->o.batch && s.pos != b->ds->n))
        return ntc_error(err, NULL, 0, "bad batcher state: epoch %lld, position %lld "
                         "(%lld examples, batch %d)", (long long)s.epoch, (long long)s.pos,
                         (long long)b->ds->n, b->o.batch);
    b->epoch = s.epoch;
    b->pos = s.pos;
    return 0;
}
