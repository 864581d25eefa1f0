/* Shared by the tailor and new-head passes. */
#ifndef NTC_PASSES_NETTAILOR_INTERNAL_H
#define NTC_PASSES_NETTAILOR_INTERNAL_H

#include <stdint.h>
#include "ntc/ir.h"

/* Replaces the last linear node by a new one named alike with `classes`
 * outputs (<= 0: as many as before), bias kept if it had one; its
 * parameters have no data yet. */
int ntc_nt_replace_classifier(ntc_graph *g, long classes, ntc_err *err);
/* Gives every parameter with handle >= first_value and no data its
 * initial values: He-normal conv weights, PyTorch's uniform bound for
 * linear layers, identity batchnorm, zeros elsewhere.  Shapes must be
 * inferred. */
int ntc_nt_init_params(ntc_graph *g, int first_value, uint64_t seed, ntc_err *err);

#endif
