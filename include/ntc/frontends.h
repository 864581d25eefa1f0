/* ntc/frontends.h - builders of standard backbones as IR graphs.
 *
 *   ntc_resnet_opts o;
 *   ntc_resnet_opts_default(&o);                 // CIFAR ResNet-20, 3x32x32, 10 classes
 *   o.depth = 20;
 *   if (ntc_resnet_set_input(&o, "1x28x28", &err)) ...
 *   ntc_graph *g = ntc_resnet_build(&o, &err);   // verified, weights initialised
 *   ntc_graph_write_xml(g, "backbone.xml", "backbone.safetensors", &err);
 *
 * Block structure (what NetTailor works on): the stem is one universal
 * block "stem"; every residual block is one universal block "sS.bB" whose
 * NetTailor layer is its own name and whose output is its final relu
 * ("sS.bB.relu"); global pooling, flatten and the classifier form the task
 * block "head".  The graph input is "image" [N,C,H,W], the output "logits".
 */
#ifndef NTC_FRONTENDS_H
#define NTC_FRONTENDS_H

#include <stdint.h>

#include "ntc/ir.h"

typedef enum {
    NTC_RESNET_CIFAR,            /* He et al. 2016 sec. 4.2: depth 6n+2, 3 stages of n BasicBlocks */
    NTC_RESNET18,                /* torchvision resnet18: BasicBlocks [2,2,2,2] */
    NTC_RESNET34,                /* torchvision resnet34: BasicBlocks [3,4,6,3] */
} ntc_resnet_arch;

#define NTC_RESNET_MAX_STAGES 4

typedef struct {
    ntc_resnet_arch arch;
    int depth;                   /* CIFAR only: 6n+2; ignored for resnet18/34 */
    int channels, height, width; /* input image C,H,W */
    int classes;
    int n_widths;                /* 0: the arch's default widths */
    int widths[NTC_RESNET_MAX_STAGES];  /* channels per stage (stem = widths[0]) */
    uint64_t seed;               /* weights are a pure function of seed and parameter name */
    const char *name;            /* graph name; NULL: "resnet<depth>" */
} ntc_resnet_opts;

/* CIFAR ResNet-20 on 3x32x32 images, 10 classes, default widths, seed 0. */
void ntc_resnet_opts_default(ntc_resnet_opts *o);

/* Option parsers with the error messages the driver shows; each returns 0,
 * or -1 with err filled and o unchanged.
 *   arch:   "cifar", "resnet18", "resnet34", or "resnetD" with D = 6n+2
 *           (which also sets depth)
 *   input:  "CxHxW", e.g. "1x28x28" (every dimension >= 1)
 *   widths: comma-separated positive integers, e.g. "16,32,64" */
int ntc_resnet_set_arch(ntc_resnet_opts *o, const char *s, ntc_err *err);
int ntc_resnet_set_input(ntc_resnet_opts *o, const char *s, ntc_err *err);
int ntc_resnet_set_widths(ntc_resnet_opts *o, const char *s, ntc_err *err);

/* Checks o without building: 0, or -1 with err saying which option is
 * wrong (depth not 6n+2, wrong number of widths, sizes out of range). */
int ntc_resnet_check(const ntc_resnet_opts *o, ntc_err *err);

/* Number of stages of an arch (3 for CIFAR, 4 for resnet18/34). */
int ntc_resnet_stages(ntc_resnet_arch arch);

/* Builds the network described by o with He-initialised weights owned by
 * the graph (see frontends/resnet.c for the exact initialisation).  The
 * result passes ntc_graph_verify.  Returns NULL with err filled when
 * ntc_resnet_check refuses o or memory runs out. */
ntc_graph *ntc_resnet_build(const ntc_resnet_opts *o, ntc_err *err);

/* ---- ONNX import -------------------------------------------------------- *
 *
 *   ntc_graph *g = ntc_onnx_import("resnet.onnx", &err);   // weights included
 *   if (!g) fprintf(stderr, "ntc: error: %s\n", ntc_err_str(&err));
 *   ntc_graph_write_xml(g, "backbone.xml", "backbone.safetensors", &err);
 *
 * Reads an ONNX model (opsets 9 to 17; docs/onnx.md lists the operators
 * and attributes) into a verified graph whose parameters own their data
 * (the float32 initializers, transposed or scaled where ntc's ops need
 * it).  Graph inputs keep their ONNX names with the first dimension as
 * the symbolic batch; outputs keep theirs.  Nodes are named after the
 * ONNX nodes.  Blocks are recognised as in `ntc new resnet`: the nodes
 * before the first residual block form the universal block "stem", each
 * residual block (the nodes between residual joins) a universal block
 * that is its own NetTailor layer, and the classifier (pooling, flatten,
 * last Gemm/MatMul and whatever follows it) the task block "head".  The
 * opset and producer are kept as metadata "onnx.opset", "onnx.producer".
 *
 * Errors: "FILE: node 'NAME' (OpType): what" for a node that cannot be
 * imported (unsupported operators and attributes name the opset),
 * "FILE: what" otherwise (malformed or truncated files, unsupported
 * opsets, data types or input shapes).  Returns NULL with err filled. */
ntc_graph *ntc_onnx_import(const char *path, ntc_err *err);
/* The same from a serialised ModelProto in memory; `file` names it in
 * messages and gives the graph's name (its base name without extension). */
ntc_graph *ntc_onnx_import_buffer(const void *data, size_t len, const char *file, ntc_err *err);

#endif
