/* xoshiro256** (Blackman & Vigna) seeded through splitmix64: small, fast,
 * and identical on every platform, so a seed reproduces a run anywhere. */
#include "ntc/rng.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void ntc_rng_seed(ntc_rng *r, uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&x);
}

void ntc_rng_seed3(ntc_rng *r, uint64_t seed, uint64_t a, uint64_t b)
{
    /* Mix each component through splitmix64 so that nearby (a, b) pairs give
     * unrelated streams rather than shifted copies of one another. */
    uint64_t x = seed;
    uint64_t h = splitmix64(&x);
    x = h ^ a;
    h = splitmix64(&x);
    x = h ^ b;
    h = splitmix64(&x);
    ntc_rng_seed(r, h);
}

uint64_t ntc_rng_next(ntc_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t ntc_rng_below(ntc_rng *r, uint64_t n)
{
    /* Reject the top partial copy of [0, n) so every value is equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = ntc_rng_next(r);
    while (x >= limit);
    return x % n;
}

float ntc_rng_uniform(ntc_rng *r)
{
    return (float)(ntc_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float ntc_rng_normal(ntc_rng *r)
{
    /* u1 in (0,1] keeps log() finite. */
    double u1 = ((double)(ntc_rng_next(r) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
    double u2 = (double)(ntc_rng_next(r) >> 11) * (1.0 / 9007199254740992.0);
    return (float)(sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2));
}

void ntc_rng_shuffle(ntc_rng *r, int64_t *idx, int64_t n)
{
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)ntc_rng_below(r, (uint64_t)i + 1);
        int64_t t = idx[i];
        idx[i] = idx[j];
        idx[j] = t;
    }
}

void ntc_rng_format(const ntc_rng *r, char buf[NTC_RNG_TEXT])
{
    snprintf(buf, NTC_RNG_TEXT, "%016llx%016llx%016llx%016llx",
             (unsigned long long)r->s[0], (unsigned long long)r->s[1],
             (unsigned long long)r->s[2], (unsigned long long)r->s[3]);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int ntc_rng_parse(const char *text, ntc_rng *r)
{
    if (strlen(text) != 64)
        return -1;
    ntc_rng t;
    for (int w = 0; w < 4; w++) {
        uint64_t v = 0;
        for (int i = 0; i < 16; i++) {
            int h = hexval(text[w * 16 + i]);
            if (h < 0)
                return -1;
            v = v << 4 | (uint64_t)h;
        }
        t.s[w] = v;
    }
    /* xoshiro's all-zero state is a fixed point: never a real saved state. */
    if (!(t.s[0] | t.s[1] | t.s[2] | t.s[3]))
        return -1;
    *r = t;
    return 0;
}
