#include <string.h>

#include "core/alloc.h"
#include "model/model.h"
#include "test.h"

TEST(model_loads_folder_with_its_tokenizers) {
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    REQUIRE_OK(sdxl_model_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &m, &err), &err);
    CHECK(sdxl_tokenizer_pad_id(m->tok[0]) == 913); /* <|endoftext|> */
    CHECK(sdxl_tokenizer_pad_id(m->tok[1]) == 0);   /* "!" */
    sdxl_model_free(m);
    sdxl_model_free(NULL);
}

TEST(model_single_file_tokenizers) {
    sdxl_error err = {0};
    sdxl_model *m = NULL;
    REQUIRE_OK(sdxl_model_load(sdxl_test_data("refs/tiny-sdxl"), NULL, &m, &err), &err);
    char path[512];
    snprintf(path, sizeof path, "%s/model_single.safetensors", sdxl_test_tmpdir());
    REQUIRE_OK(sdxl_weights_write_single_file(m->weights, path, NULL, &err), &err);
    char folder[512];
    snprintf(folder, sizeof folder, "%s", sdxl_test_data("refs/tiny-sdxl"));
    sdxl_model_free(m);

    /* the standard CLIP vocabulary (49408 tokens) does not fit the tiny encoders (1000): refused */
    m = NULL;
    CHECK(sdxl_model_load(path, NULL, &m, &err) == SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "49408") != NULL);
    CHECK(m == NULL);

    /* with the folder's tokenizers it loads */
    sdxl_model_params p = sdxl_model_default_params();
    p.tokenizer_dir = folder;
    REQUIRE_OK(sdxl_model_load(path, &p, &m, &err), &err);
    CHECK(sdxl_tokenizer_vocab_size(m->tok[0]) == 914);
    sdxl_model_free(m);

    /* a data dir without the vocabulary: NOT_FOUND naming the file */
    char vocab[512];
    CHECK(sdxl_model_find_clip_vocab(NULL, vocab, sizeof vocab, &err) == SDXL_STATUS_OK);
    CHECK(strstr(vocab, "clip_bpe_simple_vocab_16e6.txt.gz") != NULL);
}
