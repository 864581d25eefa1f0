/* ntc/rng.h - a small seedable pseudo-random generator (xoshiro256**).
 *
 * Everything random in ntc (shuffling, augmentation, weight init, split
 * selection) draws from an ntc_rng so that the same seed gives the same run
 * on every machine.  The state is four 64-bit words: copying the struct
 * saves it, and ntc_rng_format/ntc_rng_parse turn it into text for
 * checkpoints, so a resumed run continues the exact same stream.
 *
 *   ntc_rng r;
 *   ntc_rng_seed(&r, 42);
 *   uint64_t k = ntc_rng_below(&r, 10);   // uniform in 0..9
 *   float u = ntc_rng_uniform(&r);        // uniform in [0, 1)
 */
#ifndef NTC_RNG_H
#define NTC_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint64_t s[4];
} ntc_rng;

/* Text length of ntc_rng_format's output, including the NUL. */
#define NTC_RNG_TEXT 68

/* Seeds the state by running splitmix64 from seed (any seed is fine, 0 too). */
void ntc_rng_seed(ntc_rng *r, uint64_t seed);
/* Seeds a stream that depends on (seed, a, b) and on nothing else: used to
 * give each epoch or batch its own stream so resuming needs no saved state. */
void ntc_rng_seed3(ntc_rng *r, uint64_t seed, uint64_t a, uint64_t b);
/* Next 64 random bits. */
uint64_t ntc_rng_next(ntc_rng *r);
/* Uniform integer in [0, n) without modulo bias; n must be > 0. */
uint64_t ntc_rng_below(ntc_rng *r, uint64_t n);
/* Uniform float in [0, 1) with 24 random bits. */
float ntc_rng_uniform(ntc_rng *r);
/* Standard normal sample (Box-Muller, one draw per call). */
float ntc_rng_normal(ntc_rng *r);
/* Fisher-Yates shuffle of idx[0..n). */
void ntc_rng_shuffle(ntc_rng *r, int64_t *idx, int64_t n);

/* The state as 64 hex digits (NTC_RNG_TEXT bytes with the NUL). */
void ntc_rng_format(const ntc_rng *r, char buf[NTC_RNG_TEXT]);
/* Parses ntc_rng_format's text; 0 ok, -1 malformed or all-zero state. */
int ntc_rng_parse(const char *text, ntc_rng *r);

#endif
