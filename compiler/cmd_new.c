/* ntc new: build a standard backbone with fresh weights and write it as
 * OUT.xml + OUT.safetensors. */
#include "driver.h"
#include "ntc/frontends.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char new_help[] =
    "usage: ntc new resnet [OPTIONS] -o OUT.xml\n"
    "\n"
    "Builds a ResNet backbone with He-initialised weights and writes the graph\n"
    "to OUT.xml and its weights to OUT.safetensors (same name, .safetensors).\n"
    "\n"
    "options:\n"
    "  --arch A        cifar (default): depth 6n+2, three stages of BasicBlocks;\n"
    "                  resnet18, resnet34: torchvision's ImageNet topology\n"
    "  --depth D       depth of a cifar net: 8, 14, 20 (default), 32, 44, 56, 110, ...\n"
    "  --input CxHxW   input image, e.g. 1x28x28 (default 3x32x32; 3x224x224 for resnet18/34)\n"
    "  --classes K     classifier outputs (default 10; 1000 for resnet18/34)\n"
    "  --widths W,...  channels per stage (default 16,32,64; 64,128,256,512 for resnet18/34)\n"
    "  --seed S        seed of the weight initialisation (default 0)\n"
    "  --name NAME     graph name (default resnetD)\n"
    "  -o OUT.xml      output graph (required)\n"
    "\n"
    "Shortcuts that change the shape are 1x1 convolution + batchnorm projections\n"
    "(option B of the ResNet paper), as in torchvision.\n"
    "\n"
    "example:\n"
    "  ntc new resnet --depth 20 --input 1x28x28 --classes 10 -o backbone.xml\n";


/* Value of option argv[*i]: either "--opt=value" or the next argument. */
static const char *opt_value(int argc, char **argv, int *i, const char *opt)
{
    size_t n = strlen(opt);
    if (!strncmp(argv[*i], opt, n) && argv[*i][n] == '=')
        return argv[*i] + n + 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

static bool is_opt(const char *arg, const char *opt)
{
    size_t n = strlen(opt);
    return !strncmp(arg, opt, n) && (arg[n] == 0 || arg[n] == '=');
}

/* Builds the network and writes out + weights; prints what it wrote. */
static int write_resnet(const ntc_resnet_opts *o, const char *out, const char *weights)
{
    ntc_err err = {0};
    ntc_graph *g = ntc_resnet_build(o, &err);
    if (!g)
        return drv_fail(&err);
    int rc = ntc_graph_write_xml(g, out, weights, &err) ? drv_fail(&err) : 0;
    if (rc == 0) {
        int64_t params = 0, macs = 0;
        for (int i = 0; i < g->n_nodes; i++) {
            params += ntc_node_params(g, i);
            macs += ntc_node_macs(g, i);
        }
        char p[32], m[32], in[64], lo[64];
        ntc_shape_format(&g->values[g->inputs[0]].shape, in, sizeof in);
        ntc_shape_format(&g->values[g->outputs[0].value].shape, lo, sizeof lo);
        printf("wrote %s and %s\n", out, weights);
        printf("%s: image [%s] -> logits [%s], %d blocks, %d nodes\n", g->name, in, lo, g->n_blocks, g->n_nodes);
        printf("%s parameters, %s MACs per image\n", drv_grouped(params, p), drv_grouped(macs, m));
    }
    ntc_graph_free(g);
    return rc;
}

static int new_resnet(int argc, char **argv)
{
    ntc_resnet_opts o;
    ntc_resnet_opts_default(&o);
    ntc_err err = {0};
    const char *out = NULL;
    bool have_depth = false, have_input = false, have_classes = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v;
        long n;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(new_help, stdout);
            return 0;
        }
        static const char *const with_value[] = {"--arch", "--depth", "--input", "--classes", "--widths",
                                                 "--seed", "--name", "-o"};
        const char *opt = NULL;
        for (size_t k = 0; k < sizeof with_value / sizeof with_value[0]; k++)
            if (is_opt(a, with_value[k]))
                opt = with_value[k];
        if (!opt)
            return drv_usage("new", a[0] == '-' ? "unknown option '%s'" : "unexpected argument '%s'", a);
        if (!(v = opt_value(argc, argv, &i, opt)))
            return drv_usage("new", "%s needs a value", opt);
        if (!strcmp(opt, "--arch")) {
            if (ntc_resnet_set_arch(&o, v, &err))
                return drv_usage("new", "%s", err.msg);
        } else if (!strcmp(opt, "--depth")) {
            if (drv_parse_int("new", opt, v, &n))
                return 2;
            if (n < 1 || n > 10000)
                return drv_usage("new", "--depth %ld is out of range", n);
            o.depth = (int)n;
            have_depth = true;
        } else if (!strcmp(opt, "--input")) {
            if (ntc_resnet_set_input(&o, v, &err))
                return drv_usage("new", "--input: %s", err.msg);
            have_input = true;
        } else if (!strcmp(opt, "--classes")) {
            if (drv_parse_int("new", opt, v, &n))
                return 2;
            if (n < 1 || n > 1000000)
                return drv_usage("new", "--classes must be in 1..1000000, got %ld", n);
            o.classes = (int)n;
            have_classes = true;
        } else if (!strcmp(opt, "--widths")) {
            if (ntc_resnet_set_widths(&o, v, &err))
                return drv_usage("new", "--widths: %s", err.msg);
        } else if (!strcmp(opt, "--seed")) {
            if (drv_parse_int("new", opt, v, &n))
                return 2;
            if (n < 0)
                return drv_usage("new", "--seed must be >= 0, got %ld", n);
            o.seed = (uint64_t)n;
        } else if (!strcmp(opt, "--name")) {
            if (!*v)
                return drv_usage("new", "--name must not be empty");
            o.name = v;
        } else {
            out = v;
        }
    }
    if (!out)
        return drv_usage("new", "no output file: give -o OUT.xml");
    if (o.arch != NTC_RESNET_CIFAR) {
        if (have_depth)
            return drv_usage("new", "--depth applies to --arch cifar only; resnet18/34 have a fixed depth");
        if (!have_input)
            o.channels = 3, o.height = o.width = 224;
        if (!have_classes)
            o.classes = 1000;
    }
    if (ntc_resnet_check(&o, &err))
        return drv_usage("new", "%s", err.msg);
    char *weights = drv_weights_name(out);
    if (!weights)
        return drv_failf("out of memory");
    int rc = !strcmp(weights, out)
                 ? drv_usage("new", "-o %s would be both the graph and its weights file; name the graph .xml", out)
                 : write_resnet(&o, out, weights);
    free(weights);
    return rc;
}

int cmd_new(int argc, char **argv)
{
    if (argc < 2)
        return drv_usage("new", "which network? (ntc new resnet ...)");
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        fputs(new_help, stdout);
        return 0;
    }
    if (!strcmp(argv[1], "resnet"))
        return new_resnet(argc - 1, argv + 1);
    return drv_usage("new", "unknown network '%s' (known: resnet)", argv[1]);
}
