/* Characters rendered from installed TrueType fonts (the "glyphs" and
 * "glyphs-digits" sources): not public; dataset.c and tests use it.
 *
 * An example is one character drawn white on a black 28x28 canvas (like
 * MNIST): the glyph is scaled so its larger side is 20 px, then distorted
 * by a random rotation, shear and scale (FreeType's FT_Set_Transform) and
 * placed centred with a small random offset.  Everything random about
 * example i of a split comes from the RNG stream (GLYPHS_SEED, split, i),
 * so any example can be rendered alone and the train and test parts never
 * share randomness.
 */
#ifndef NTC_GLYPHS_H
#define NTC_GLYPHS_H

#include "ntc/data.h"

#define NTC_GLYPH_CANVAS 28            /* output images are 28x28 */
#define NTC_GLYPHS_TRAIN_PER_CLASS 200 /* "glyphs": 5200 train, 1560 test */
#define NTC_GLYPHS_TEST_PER_CLASS 60

/* The fonts found on this machine, opened with FreeType. */
typedef struct ntc_glyph_fonts ntc_glyph_fonts;

/* One example's distortion. */
typedef struct {
    float angle_deg;             /* rotation, counter-clockwise, in [-15, 15] */
    float shear;                 /* x += shear * y, in [-0.3, 0.3] */
    float scale;                 /* in [0.8, 1.1] */
    int dx, dy;                  /* offset from the centre in px, in [-2, 2] */
} ntc_glyph_distortion;

/* Opens every font of the fixed list (glyphs.c) that is installed; fails
 * with an error naming the Debian packages when fewer than 4 are. */
ntc_glyph_fonts *ntc__glyph_fonts_open(ntc_err *err);
void ntc__glyph_fonts_close(ntc_glyph_fonts *f);
int ntc__glyph_fonts_count(const ntc_glyph_fonts *f);
/* Path of font i (0 <= i < count), in the list's order. */
const char *ntc__glyph_font_path(const ntc_glyph_fonts *f, int i);

/* Draws a distortion from r (uniform in the ranges above). */
void ntc__glyph_draw_distortion(ntc_rng *r, ntc_glyph_distortion *d);

/* Renders character ch with font `font` and distortion d into out
 * (NTC_GLYPH_CANVAS^2 bytes, row-major, 0 = black).  A glyph that the
 * distortion makes larger than the canvas's inner 26x26 is shrunk to fit,
 * and the offset is clamped, so no ink is ever clipped.  0 ok, -1 error
 * (the font lacks ch, FreeType failed). */
int ntc__glyph_render(ntc_glyph_fonts *f, int font, char ch, const ntc_glyph_distortion *d,
                      uint8_t *out, ntc_err *err);

/* The built-in source: digits false = "glyphs" (classes "A".."Z"), true =
 * "glyphs-digits" ("0".."9").  Renders the part o->split needs (train for
 * train and val, test for test, both for all) as an unsplit dataset with
 * class names and the default normalisation set. */
ntc_dataset *ntc__glyphs_load(bool digits, const ntc_data_opts *o, ntc_err *err);

#endif
