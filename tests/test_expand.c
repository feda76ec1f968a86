/* test_expand.c — block expansion, loops, naming, shape inference through
 * whole nets, protocols, train blocks and -D overrides. */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "support.h"

#define PROTO2D "protocol p {\n  size 32 x 32\n  classes 2\n}\n"
#define PROTO3D "protocol p {\n  size 16 x 32 x 32\n  spacing 3.0 x 1.0 x 1.0 mm\n  classes 2\n}\n"

static Shape out_shape(const Compiled *c, const char *node)
{
    const Node *n = find_node(c->g, node);
    ck_assert_msg(n != NULL, "no node %s", node);
    return c->g->tensors[n->out].shape;
}

#define ck_shape(c, node, ...)                                                   \
    do {                                                                         \
        int64_t want_[] = { __VA_ARGS__ };                                       \
        Shape s_ = out_shape((c), (node));                                       \
        ck_assert_int_eq(s_.rank, (int)(sizeof want_ / sizeof want_[0]));        \
        for (int i_ = 0; i_ < s_.rank; i_++)                                     \
            ck_assert_msg(s_.d[i_] == want_[i_], "%s: dim %d is %lld, want %lld", \
                          (node), i_, (long long)s_.d[i_], (long long)want_[i_]); \
    } while (0)

START_TEST(blocks_loops_and_names)
{
    const char *src =
        "block cbr(c, k = 3) { conv(c, k) -> batchnorm -> relu }\n"
        "block stage(c) { cbr(c) -> cbr(c) }\n"
        "net n(base = 4, depth = 2) {\n"
        "  input image\n"
        "  x = image\n"
        "  for i in 0 .. depth - 1 {\n"
        "    enc[i] = stage(base << i)(x)\n"
        "    x = maxpool(2)(enc[i])\n"
        "  }\n"
        "  x = stage(base << depth)(x)\n"
        "  for i in depth - 1 .. 0 {\n"
        "    up[i] = upconv(base << i, 2)(x)\n"
        "    dec[i] = stage(base << i)(concat(enc[i], up[i]))\n"
        "    x = dec[i]\n"
        "  }\n"
        "  output logits = conv(2, 1)(x)\n"
        "}\n" PROTO2D;
    Compiled *c = compile_text("u.net", src, NULL);
    ck_clean(c);
    /* loops unrolled, blocks expanded, names from the source */
    ck_assert_int_ge(find_param(c->g, "enc.0.cbr.conv.weight"), 0);
    ck_assert_int_ge(find_param(c->g, "enc.1.cbr_1.batchnorm.running_var"), 0);
    ck_assert_int_ge(find_param(c->g, "dec.0.stage.cbr_1.conv.bias"), 0);
    ck_assert_int_ge(find_param(c->g, "up.1.weight"), 0);
    ck_assert_int_ge(find_param(c->g, "logits.weight"), 0);
    ck_assert_int_ge(find_param(c->g, "x_2.cbr.conv.weight"), 0);   /* the bottleneck: the third `x =` */
    ck_shape(c, "enc.1.cbr_1.relu", 1, 8, 16, 16);
    ck_shape(c, "x_2.cbr.conv", 1, 16, 8, 8);
    ck_shape(c, "dec.0.concat", 1, 8, 32, 32);
    ck_shape(c, "logits", 1, 2, 32, 32);
    /* weight layouts as PyTorch: conv [Cout, Cin, k, k]; upconv [Cin, Cout, k, k] */
    const Tensor *w = &c->g->tensors[c->g->params[find_param(c->g, "up.1.weight")].tensor];
    ck_assert_int_eq(w->shape.rank, 4);
    ck_assert_int_eq(w->shape.d[0], 16);
    ck_assert_int_eq(w->shape.d[1], 8);
    /* every parameter name is unique */
    for (int i = 0; i < c->g->nparams; i++)
        for (int j = i + 1; j < c->g->nparams; j++)
            ck_assert_str_ne(c->g->params[i].name, c->g->params[j].name);
    /* He normal with nnU-Net's slope, fan-in = Cin * k * k */
    const Param *pw = &c->g->params[find_param(c->g, "enc.0.cbr.conv.weight")];
    ck_assert_int_eq(pw->init.kind, INIT_HE_NORMAL);
    ck_assert_int_eq(pw->init.fan_in, 1 * 3 * 3);
    ck_assert_double_eq_tol(pw->init.a, 0.01, 1e-12);
    ck_assert(!c->g->params[find_param(c->g, "enc.0.cbr.batchnorm.running_mean")].trainable);
    compiled_free(c);
}
END_TEST

START_TEST(residual_block_and_multiple_outputs)
{
    const char *src =
        "block voxres(c) {\n"
        "  input x\n"
        "  y = x -> batchnorm -> relu -> conv(c, 3) -> batchnorm -> relu -> conv(c, 3)\n"
        "  output x + y\n"
        "}\n"
        "net n {\n"
        "  input image\n"
        "  h = conv(8, 3)(image)\n"
        "  r = voxres(8)(h)\n"
        "  aux = conv(2, 1)(h)\n"
        "  output aux\n"
        "  output logits = conv(2, 1)(r) + aux\n"
        "}\n" PROTO3D;
    Compiled *c = compile_text("r.net", src, NULL);
    ck_clean(c);
    ck_assert_int_eq(c->g->noutputs, 2);
    ck_assert_str_eq(c->g->outputs[0].name, "aux");
    ck_shape(c, "r.add", 1, 8, 16, 32, 32);
    ck_assert_int_ge(find_param(c->g, "r.y.conv_1.weight"), 0);
    ck_assert_int_ge(find_param(c->g, "logits.conv.weight"), 0);
    const Tensor *w = &c->g->tensors[c->g->params[find_param(c->g, "r.y.conv.weight")].tensor];
    ck_assert_int_eq(w->shape.rank, 5);     /* 3D: [8, 8, 3, 3, 3] */
    ck_assert_int_eq(w->shape.d[4], 3);
    compiled_free(c);
}
END_TEST

START_TEST(anisotropic_and_valid_convs)
{
    const char *src =
        "net n {\n"
        "  input image\n"
        "  a = conv(4, [1, 3, 3], stride = [1, 2, 2])(image)\n"
        "  b = conv(4, 3, padding = valid)(a)\n"
        "  c = conv(4, 3, stride = 2)(b)\n"                 /* TF same: ceil(in / 2) */
        "  d = conv(4, 3, padding = [[0, 1], 1, 0])(c)\n"
        "  output logits = conv(2, 1)(upsample([4, 8, 8])(d))\n"
        "}\n" PROTO3D;
    Compiled *c = compile_text("a.net", src, NULL);
    ck_clean(c);
    ck_shape(c, "a", 1, 4, 16, 16, 16);
    ck_shape(c, "b", 1, 4, 14, 14, 14);
    ck_shape(c, "c", 1, 4, 7, 7, 7);
    ck_shape(c, "d", 1, 4, 6, 7, 5);
    const Node *n = find_node(c->g, "c");
    ck_assert_int_eq(n->at.pad.lo[0], 0);   /* 14 -> 7 at stride 2: total padding 1, at the end */
    ck_assert_int_eq(n->at.pad.hi[0], 1);
    compiled_free(c);

    /* odd size: same padding with stride 2 pads asymmetrically, as TensorFlow */
    c = compile_text("o.net",
        "net n {\n  input image\n  a = conv(4, 3, stride = 2)(image)\n  output logits = conv(2, 1)(upsample(2)(a))\n}\n"
        "protocol p {\n  size 32 x 32\n  classes 2\n}\n", NULL);
    ck_clean(c);
    n = find_node(c->g, "a");
    ck_assert_int_eq(n->at.pad.lo[0], 0);
    ck_assert_int_eq(n->at.pad.hi[0], 1);
    compiled_free(c);
}
END_TEST

START_TEST(valid_unet_crop_and_concat)
{
    const char *src =
        "net n {\n"
        "  input image\n"
        "  s = image -> conv(4, 3, padding = valid) -> relu -> conv(4, 3, padding = valid) -> relu\n"
        "  x = maxpool(2)(s) -> conv(8, 3, padding = valid) -> conv(8, 3, padding = valid)\n"
        "  u = upconv(4, 2)(x)\n"
        "  m = concat(crop(s, u), u)\n"
        "  output logits = conv(2, 1)(m)\n"
        "}\n"
        "protocol p {\n  size 36 x 36\n  classes 2\n}\n";
    Compiled *c = compile_text("v.net", src, NULL);
    ck_clean(c);
    ck_shape(c, "s.relu_1", 1, 4, 32, 32);
    ck_shape(c, "u", 1, 4, 24, 24);
    ck_shape(c, "m.crop", 1, 4, 24, 24);
    ck_shape(c, "logits", 1, 2, 24, 24);
    compiled_free(c);
}
END_TEST

START_TEST(divisibility_hint)
{
    const char *src =
        "net n {\n  input image\n  a = conv(4, 3)(image)\n  b = maxpool(2)(a)\n  c = maxpool(2)(b)\n"
        "  u = upsample(4)(c)\n  output logits = conv(2, 1)(concat(a, u))\n}\n"
        "protocol odd {\n  size 30 x 32\n  classes 2\n}\n";
    Compiled *c = compile_text("d.net", src, NULL);
    ck_assert_int_eq(compiled_errors(c), 1);
    ck_msg(c, "d.net:7:30: error: concat of 4x30x32 and 4x28x32");
    ck_msg(c, "input 30 is not divisible by 4 (2 poolings) for protocol odd");
    compiled_free(c);
}
END_TEST

START_TEST(limits_stop_runaway_expansion)
{
    Compiled *c = compile_text("l.net",
        "block r(c) { r(c) }\nnet n {\n  input image\n  output logits = r(2)(image)\n}\n" PROTO2D, NULL);
    ck_msg(c, "blocks nested more than 64 deep");
    compiled_free(c);
    c = compile_text("l.net",
        "net n {\n  input image\n  x = image\n  for i in 0 .. 1000000000 { x = relu(x) }\n"
        "  output logits = conv(2, 1)(x)\n}\n" PROTO2D, NULL);
    ck_msg(c, "more than");
    ck_assert_int_eq(compiled_errors(c), 1);
    compiled_free(c);
    /* exponential block fan-out hits the node limit, not the clock */
    c = compile_text("l.net",
        "block b0 { relu -> relu }\nblock b1 { b0 -> b0 }\nblock b2 { b1 -> b1 }\nblock b3 { b2 -> b2 }\n"
        "block b4 { b3 -> b3 }\nblock b5 { b4 -> b4 }\nblock b6 { b5 -> b5 }\nblock b7 { b6 -> b6 }\n"
        "block b8 { b7 -> b7 }\nblock b9 { b8 -> b8 }\nblock b10 { b9 -> b9 }\nblock b11 { b10 -> b10 }\n"
        "block b12 { b11 -> b11 }\nblock b13 { b12 -> b12 }\nblock b14 { b13 -> b13 }\nblock b15 { b14 -> b14 }\n"
        "block b16 { b15 -> b15 }\nblock b17 { b16 -> b16 }\nblock b18 { b17 -> b17 }\nblock b19 { b18 -> b18 }\n"
        "net n {\n  input image\n  output logits = conv(2, 1)(b19(image))\n}\n" PROTO2D, NULL);
    ck_assert_int_ge(compiled_errors(c), 1);
    compiled_free(c);
}
END_TEST

START_TEST(protocol_fields)
{
    const char *src =
        "net n {\n  input t1, flair\n  output logits = conv(3, 1)(concat(t1, flair))\n}\n"
        "protocol brain {\n  modality mri\n  channels t1, flair\n  size 24 x 24 x 16\n  patch 16 x 16 x 16\n"
        "  spacing 1.0 x 1.0 x 1.5 mm\n  normalize zscore(nonzero)\n  classes background, wm, gm\n  batch 2\n}\n";
    Compiled *c = compile_text("p.net", src, NULL);
    ck_clean(c);
    ck_assert_int_eq(c->g->ninputs, 2);
    const Tensor *t = &c->g->tensors[c->g->inputs[1].tensor];
    ck_assert_str_eq(t->name, "flair");
    ck_assert_int_eq(t->shape.d[0], 2);     /* batch */
    ck_assert_int_eq(t->shape.d[1], 1);     /* one channel per input */
    ck_assert_int_eq(t->shape.d[2], 16);    /* the patch, not the matrix */
    compiled_free(c);

    /* -D overrides a protocol field and a net parameter */
    c = compile_text("p.net", "net n(w = 4) {\n  input image\n  output logits = conv(2, 1)(conv(w, 3)(image))\n}\n"
                     PROTO2D, "-D w=6 -D protocol.size=64x48");
    ck_clean(c);
    ck_shape(c, "logits.conv", 1, 6, 64, 48);
    compiled_free(c);
    c = compile_text("p.net", "net n(w = 4) {\n  input image\n  output logits = conv(2, 1)(image)\n}\n" PROTO2D,
                     "-D ww=6");
    ck_msg(c, "net n has no parameter `ww`; did you mean `w`?");
    compiled_free(c);
}
END_TEST

START_TEST(train_block_and_losses)
{
    const char *src =
        "net n {\n  input image\n  h = conv(4, 3)(image)\n  output aux = conv(2, 1)(maxpool(2)(h))\n"
        "  output logits = conv(2, 1)(h)\n}\n" PROTO2D
        "train n on p {\n"
        "  loss dice(logits, labels) + ce(logits, labels, weight = [1, 10]) + 0.5 * focal(aux, labels, gamma = 2)\n"
        "  optimizer adamw(lr = 3e-4)\n  schedule warmup(5), cosine\n  batch 3\n  patch 16 x 16\n"
        "  augment mirror(x), rotate(-15 .. 15, p = 0.3), gamma(0.7 .. 1.5, invert)\n"
        "  freeze h\n  sampling balanced\n  epochs 2\n}\n";
    Compiled *c = compile_text("t.net", src, "--train");
    ck_clean(c);
    ck_assert_int_eq(c->g->nlosses, 1);
    const Tensor *lt = &c->g->tensors[c->g->losses[0].tensor];
    ck_assert_int_eq(lt->shape.rank, 0);
    ck_shape(c, "logits", 3, 2, 16, 16);        /* training batch and patch */
    ck_assert_int_eq(out_shape(c, "loss.focal").rank, 0);
    ck_assert_ptr_nonnull(find_node(c->g, "loss.scale"));
    compiled_free(c);

    struct { const char *field, *msg; } bad[] = {
        { "loss dice(logit, labels)", "unknown name `logit`; did you mean `logits`?" },
        { "loss logits", "the loss must be a number per batch" },
        { "optimizer sgdd(lr = 0.1)", "unknown optimizer `sgdd`; did you mean `sgd`?" },
        { "augment rotate(15 .. -15)", "decreasing" },
        { "augment scale(0.8 .. 1.2, p = 2)", "between 0 and 1" },
        { "patch 16 x 16 x 16", "`patch` has 3 axes but protocol p is 2D" },
        { "epoks 3", "unknown train field `epoks`; did you mean `epochs`?" },
        { "augment mirror(z)", "axis `z` does not exist in a 2D protocol" },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char buf[1024];
        snprintf(buf, sizeof buf,
                 "net n {\n  input image\n  output logits = conv(2, 1)(image)\n}\n" PROTO2D
                 "train n on p {\n  loss ce(logits, labels)\n  %s\n}\n", bad[i].field);
        /* a second loss field would be a duplicate: replace it */
        if (strncmp(bad[i].field, "loss", 4) == 0)
            snprintf(buf, sizeof buf,
                     "net n {\n  input image\n  output logits = conv(2, 1)(image)\n}\n" PROTO2D
                     "train n on p {\n  %s\n}\n", bad[i].field);
        c = compile_text("t.net", buf, NULL);
        ck_assert_msg(compiled_errors(c) >= 1, "no error for `%s`", bad[i].field);
        ck_msg(c, bad[i].msg);
        compiled_free(c);
    }
}
END_TEST

START_TEST(freeze_patterns)
{
    ck_assert(name_matches("enc.0", "enc.0.conv.weight"));
    ck_assert(name_matches("enc.*", "enc.3.conv.bias"));
    ck_assert(name_matches("*.bias", "dec.1.conv.bias"));
    ck_assert(!name_matches("enc.1", "enc.10.conv.weight"));
    ck_assert(!name_matches("dec", "decoder.weight"));
}
END_TEST

START_TEST(imports)
{
    Compiled *c = compile_file("netdefs/unet2d.net", NULL);
    ck_clean(c);
    compiled_free(c);
    c = compile_text("/nonexistent/dir/i.net", "import \"missing.net\"\n", NULL);
    ck_msg(c, "cannot import \"missing.net\"");
    compiled_free(c);
}
END_TEST

Suite *expand_suite(void)
{
    Suite *s = suite_create("expand");
    TCase *tc = tcase_create("nets");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, blocks_loops_and_names);
    tcase_add_test(tc, residual_block_and_multiple_outputs);
    tcase_add_test(tc, anisotropic_and_valid_convs);
    tcase_add_test(tc, valid_unet_crop_and_concat);
    tcase_add_test(tc, divisibility_hint);
    tcase_add_test(tc, limits_stop_runaway_expansion);
    tcase_add_test(tc, protocol_fields);
    tcase_add_test(tc, train_block_and_losses);
    tcase_add_test(tc, freeze_patterns);
    tcase_add_test(tc, imports);
    suite_add_tcase(s, tc);
    return s;
}
