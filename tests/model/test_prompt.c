/* test_prompt.c - A1111 emphasis syntax and 75-token chunking.
 *
 * Expected segments are hand-worked from A1111's rules (modules/
 * prompt_parser.py: parse_prompt_attention, whose docstring examples are the
 * first test) and were confirmed against a scratch Python replica of that
 * function (~26k random prompts, bit-identical weights). Chunk layouts
 * follow A1111's tokenize_line (comma_padding_backtrack 20) with the
 * ids of the full CLIP vocabulary: "photo" 1125, "," 267, "(" 263, ")" 264,
 * bos 49406, eos 49407 (transformers' CLIPTokenizer, see test_tokenizer.c).
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"
#include "model/prompt.h"
#include "model/tokenizer.h"
#include "test.h"

#define CLIP_GZ "../../data/clip_bpe_simple_vocab_16e6.txt.gz"
#define PHOTO 1125
#define COMMA 267
#define BOS 49406
#define EOS 49407

typedef struct seg_exp {
    const char *text; /* NULL = BREAK */
    double w;
} seg_exp;

static bool segs_are(const char *prompt, const seg_exp *e, size_t n) {
    sdxl_error err = {0};
    sdxl_prompt_segments s;
    if (sdxl_prompt_parse(prompt, SDXL_PROMPT_A1111, &s, &err)) {
        printf("    parse(\"%s\"): %s\n", prompt, err.msg);
        return false;
    }
    bool ok = s.n == n;
    for (size_t i = 0; ok && i < n; i++) {
        if (!e[i].text)
            ok = s.seg[i].is_break;
        else
            ok = !s.seg[i].is_break && strlen(e[i].text) == s.seg[i].len &&
                 strcmp(s.seg[i].text, e[i].text) == 0 &&
                 s.seg[i].weight == e[i].w; /* exact: same products as A1111 */
    }
    if (!ok) {
        printf("    parse(\"%s\") gave %zu segments:", prompt, s.n);
        for (size_t i = 0; i < s.n; i++)
            printf(s.seg[i].is_break ? " [BREAK]" : " [\"%s\" %.17g]", s.seg[i].text, s.seg[i].weight);
        printf("\n");
    }
    sdxl_prompt_segments_free(&s);
    return ok;
}

#define SEGS(prompt, ...)                                                                                    \
    do {                                                                                                     \
        static const seg_exp e_[] = {__VA_ARGS__};                                                           \
        CHECK_MSG(segs_are(prompt, e_, sizeof e_ / sizeof *e_), "segments of \"%s\"", prompt);               \
    } while (0)

TEST(token_prompt_a1111_docstring_examples) {
    SEGS("normal text", {"normal text", 1.0});
    SEGS("an (important) word", {"an ", 1.0}, {"important", 1.1}, {" word", 1.0});
    SEGS("(unbalanced", {"unbalanced", 1.1});
    SEGS("\\(literal\\]", {"(literal]", 1.0});
    SEGS("(unnecessary)(parens)", {"unnecessaryparens", 1.1});
    SEGS("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).", {"a ", 1.0}, {"house", 1.5730000000000004},
         {" ", 1.1}, {"on", 1.0}, {" a ", 1.1}, {"hill", 0.55}, {", sun, ", 1.1}, {"sky", 1.4641000000000006},
         {".", 1.1});
}

TEST(token_prompt_emphasis_rules) {
    SEGS("(word)", {"word", 1.1});
    SEGS("((word))", {"word", 1.1 * 1.1}); /* 1.2100000000000002 */
    SEGS("(word:1.3)", {"word", 1.3});
    SEGS("((a:1.3))", {"a", 1.3 * 1.1});
    SEGS("(a: 1.5 )", {"a", 1.5});
    SEGS("(a: -1 )", {"a", -1.0});
    SEGS("(a:+.5)", {"a", 0.5});
    SEGS("(a:2.)", {"a", 2.0});
    SEGS("[word]", {"word", 1 / 1.1});
    SEGS("[[word]]", {"word", (1 / 1.1) * (1 / 1.1)});
    /* unclosed: round brackets first, then square, each to the end */
    SEGS("(a [b", {"a ", 1.1}, {"b", 1.1 * (1 / 1.1)});
    SEGS("(a [b) c]", {"a ", 1.1}, {"b", 1.1 * (1 / 1.1)}, {" c", 1 / 1.1});
    /* closers with nothing open, and ":" not followed by "number)", are text */
    SEGS("x ) y ] z", {"x ) y ] z", 1.0});
    SEGS("(a:1.5", {"a:1.5", 1.1});
    SEGS("[a:1.5]", {"a:1.5", 1 / 1.1});
    SEGS("a:1.5) b", {"a:1.5) b", 1.0});
    /* escapes; a backslash before anything else disappears */
    SEGS("\\(x\\)", {"(x)", 1.0});
    SEGS("a\\\\b", {"a\\b", 1.0});
    SEGS("C:\\path", {"C:path", 1.0});
    SEGS("(x\\\\)y)", {"x\\", 1.1}, {"y)", 1.0});
    /* <lora:...> tags are plain text here */
    SEGS("<lora:name:0.8> cat", {"<lora:name:0.8> cat", 1.0});
    /* Unicode decimal digits are \d for Python's re: Arabic-Indic 1.5 */
    SEGS("(a:\xd9\xa1.\xd9\xa5)", {"a", 1.5});
    SEGS("", {"", 1.0});
    SEGS("()", {"", 1.0});
}

TEST(token_prompt_break_rules) {
    SEGS("a BREAK b", {"a", 1.0}, {NULL, 0}, {"b", 1.0});
    SEGS("a BREAK, b", {"a", 1.0}, {NULL, 0}, {", b", 1.0});
    SEGS("aBREAK b", {"aBREAK b", 1.0});
    SEGS("BREAKfast", {"BREAKfast", 1.0});
    SEGS("_BREAK", {"_BREAK", 1.0});
    SEGS("a break b", {"a break b", 1.0});
    SEGS("BREAK BREAK", {"", 1.0}, {NULL, 0}, {"", 1.0}, {NULL, 0}, {"", 1.0});
    SEGS("a (b) BREAK (c:2) d", {"a ", 1.0}, {"b", 1.1}, {"", 1.0}, {NULL, 0}, {"", 1.0}, {"c", 2.0},
         {" d", 1.0});
    /* here A1111 would multiply its BREAK marker and tokenize the word; we break */
    SEGS("(a BREAK b)", {"a", 1.1}, {NULL, 0}, {"b", 1.1});
}

/* ---- tokenize_prompt ------------------------------------------------------------ */

static sdxl_tokenizer *clip(sdxl_tokenizer_pad pad) {
    sdxl_error err = {0};
    sdxl_tokenizer *t = NULL;
    if (sdxl_tokenizer_load_clip_default(sdxl_test_data(CLIP_GZ), pad, &t, &err))
        sdxl_test_fail(__FILE__, __LINE__, "load: %s", err.msg);
    return t;
}

static char *repeat(const char *unit, int n) {
    size_t u = strlen(unit);
    char *s = sdxl_malloc(u * (size_t)n + 1);
    for (int i = 0; i < n; i++)
        memcpy(s + u * (size_t)i, unit, u);
    s[u * (size_t)n] = 0;
    return s;
}

/* row c of b is bos, `n` copies of `id` (or the given ids), eos, pad... */
static bool row_is_run(const sdxl_token_batch *b, int c, const int32_t *ids, int n, int32_t pad) {
    const int32_t *r = b->ids + c * b->chunk_len;
    if (r[0] != BOS || r[n + 1] != EOS) return false;
    for (int i = 0; i < n; i++)
        if (r[1 + i] != ids[i]) return false;
    for (int i = n + 2; i < b->chunk_len; i++)
        if (r[i] != pad) return false;
    return true;
}

static int32_t *ids_of(int n, ...) {
    static int32_t buf[80];
    va_list ap;
    va_start(ap, n);
    for (int i = 0; i < n; i++)
        buf[i] = va_arg(ap, int32_t);
    va_end(ap);
    return buf;
}

static int32_t *photos(int n) {
    static int32_t buf[80];
    for (int i = 0; i < n; i++)
        buf[i] = PHOTO;
    return buf;
}

TEST(token_prompt_chunks_and_truncation) {
    sdxl_tokenizer *t = clip(SDXL_TOKENIZER_PAD_BANG);
    REQUIRE(t);
    sdxl_error err = {0};
    sdxl_token_batch b;
    char *s = repeat("photo ", 200);

    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 3);
    CHECK_EQ_INT(b.chunk_len, 77);
    CHECK_EQ_INT(b.n_tokens, 200);
    CHECK(row_is_run(&b, 0, photos(75), 75, 0));
    CHECK(row_is_run(&b, 1, photos(75), 75, 0));
    CHECK(row_is_run(&b, 2, photos(50), 50, 0));
    for (int i = 0; i < 3 * 77; i++)
        CHECK(b.weights[i] == 1.0f);
    sdxl_token_batch_free(&b);

    sdxl_prompt_params p = sdxl_prompt_default_params();
    p.long_mode = SDXL_LONG_TRUNCATE;
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, &p, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 1);
    CHECK_EQ_INT(b.n_truncated, 125);
    CHECK(row_is_run(&b, 0, photos(75), 75, 0));
    sdxl_token_batch_free(&b);

    /* chunk cap */
    p = sdxl_prompt_default_params();
    p.max_chunks = 2;
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, s, &p, &b, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "chunks") != NULL && b.ids == NULL);
    p.max_chunks = 0;
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, s, &p, &b, &err), SDXL_STATUS_INVALID_ARG);
    sdxl_free(s);

    /* exactly 75 tokens: one full chunk; 76: two */
    s = repeat("photo ", 75);
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 1);
    CHECK(row_is_run(&b, 0, photos(75), 75, 0));
    sdxl_token_batch_free(&b);
    sdxl_free(s);
    s = repeat("photo ", 76);
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    CHECK(row_is_run(&b, 1, photos(1), 1, 0));
    sdxl_token_batch_free(&b);
    sdxl_free(s);
    sdxl_tokenizer_free(t);
}

TEST(token_prompt_comma_rule) {
    sdxl_tokenizer *t = clip(SDXL_TOKENIZER_PAD_EOS);
    REQUIRE(t);
    sdxl_error err = {0};
    sdxl_token_batch b;
    /* 70 photos, a comma (token 70), 10 photos: 81 tokens. When the chunk is
     * full at the 76th token, the comma is 5 <= 20 from the end: the 4 photos
     * after it move to the second chunk. */
    char *head = repeat("photo ", 70), *tail = repeat("photo ", 10);
    char s[1024];
    snprintf(s, sizeof s, "%s, %s", head, tail);
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    int32_t first[71];
    memcpy(first, photos(70), sizeof(int32_t) * 70);
    first[70] = COMMA;
    CHECK(row_is_run(&b, 0, first, 71, EOS));
    CHECK(row_is_run(&b, 1, photos(10), 10, EOS));
    sdxl_token_batch_free(&b);

    /* comma_backtrack 0: plain cut at 75 */
    sdxl_prompt_params p = sdxl_prompt_default_params();
    p.comma_backtrack = 0;
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, &p, &b, &err), &err);
    int32_t cut[75];
    memcpy(cut, first, sizeof first);
    for (int i = 71; i < 75; i++)
        cut[i] = PHOTO;
    CHECK(row_is_run(&b, 0, cut, 75, EOS));
    CHECK(row_is_run(&b, 1, photos(6), 6, EOS));
    sdxl_token_batch_free(&b);

    /* a comma further back than 20 tokens does not count */
    sdxl_free(head);
    head = repeat("photo ", 50);
    char *mid = repeat("photo ", 40);
    snprintf(s, sizeof s, "%s, %s", head, mid);
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    CHECK(b.ids[51] == COMMA && b.ids[75] == PHOTO && b.ids[76] == EOS);
    sdxl_token_batch_free(&b);
    CHECK_EQ_INT(sdxl__tokenizer_comma(t), COMMA);
    sdxl_free(head);
    sdxl_free(mid);
    sdxl_free(tail);
    sdxl_tokenizer_free(t);
}

TEST(token_prompt_break_and_empty) {
    sdxl_tokenizer *t = clip(SDXL_TOKENIZER_PAD_BANG);
    REQUIRE(t);
    sdxl_error err = {0};
    sdxl_token_batch b;
    REQUIRE_OK(sdxl_tokenize_prompt(t, "photo BREAK photo photo", NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    CHECK(row_is_run(&b, 0, photos(1), 1, 0));
    CHECK(row_is_run(&b, 1, photos(2), 2, 0));
    sdxl_token_batch_free(&b);

    sdxl_prompt_params p = sdxl_prompt_default_params();
    p.long_mode = SDXL_LONG_TRUNCATE;
    REQUIRE_OK(sdxl_tokenize_prompt(t, "photo BREAK photo photo", &p, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 1);
    CHECK(row_is_run(&b, 0, photos(3), 3, 0));
    sdxl_token_batch_free(&b);

    /* "" and "BREAK" are one empty chunk = diffusers' encoding of "" */
    const char *empties[] = {"", "BREAK", "  BREAK  "};
    for (int i = 0; i < 3; i++) {
        REQUIRE_OK(sdxl_tokenize_prompt(t, empties[i], NULL, &b, &err), &err);
        CHECK_EQ_INT(b.n_chunks, 1);
        CHECK_EQ_INT(b.n_tokens, 0);
        CHECK(row_is_run(&b, 0, NULL, 0, 0));
        sdxl_token_batch_free(&b);
    }
    /* a BREAK first makes an empty first chunk, as in A1111 */
    REQUIRE_OK(sdxl_tokenize_prompt(t, "BREAK photo", NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    CHECK(row_is_run(&b, 0, NULL, 0, 0) && row_is_run(&b, 1, photos(1), 1, 0));
    sdxl_token_batch_free(&b);
    /* a full chunk followed by BREAK does not add an empty one */
    char *s75 = repeat("photo ", 75), s[600];
    snprintf(s, sizeof s, "%sBREAK photo", s75);
    REQUIRE_OK(sdxl_tokenize_prompt(t, s, NULL, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 2);
    CHECK(row_is_run(&b, 1, photos(1), 1, 0));
    sdxl_token_batch_free(&b);
    sdxl_free(s75);

    /* padding to a common chunk count */
    REQUIRE_OK(sdxl_tokenize_prompt(t, "photo", NULL, &b, &err), &err);
    REQUIRE_OK(sdxl_token_batch_pad_chunks(t, &b, 3, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 3);
    CHECK(row_is_run(&b, 0, photos(1), 1, 0) && row_is_run(&b, 1, NULL, 0, 0) &&
          row_is_run(&b, 2, NULL, 0, 0));
    for (int i = 0; i < 3 * 77; i++)
        CHECK(b.weights[i] == 1.0f);
    REQUIRE_OK(sdxl_token_batch_pad_chunks(t, &b, 2, &err), &err); /* already more */
    CHECK_EQ_INT(b.n_chunks, 3);
    sdxl_token_batch_free(&b);
    sdxl_token_batch_free(&b);
    sdxl_token_batch_free(NULL);
    sdxl_tokenizer_free(t);
}

TEST(token_prompt_weights_and_plain_syntax) {
    sdxl_tokenizer *t = clip(SDXL_TOKENIZER_PAD_EOS);
    REQUIRE(t);
    sdxl_error err = {0};
    sdxl_token_batch b;
    REQUIRE_OK(sdxl_tokenize_prompt(t, "(photo:1.5) photo [photo] ((photo))", NULL, &b, &err), &err);
    CHECK(row_is_run(&b, 0, photos(4), 4, EOS));
    CHECK(b.weights[0] == 1.0f && b.weights[1] == 1.5f && b.weights[2] == 1.0f);
    CHECK(b.weights[3] == (float)(1 / 1.1) && b.weights[4] == (float)(1.1 * 1.1));
    for (int i = 5; i < 77; i++)
        CHECK(b.weights[i] == 1.0f);
    sdxl_token_batch_free(&b);

    /* PLAIN reads the brackets as text: "(" 263, ")" 264 */
    sdxl_prompt_params p = sdxl_prompt_default_params();
    p.syntax = SDXL_PROMPT_PLAIN;
    REQUIRE_OK(sdxl_tokenize_prompt(t, "(photo) BREAK", &p, &b, &err), &err);
    CHECK_EQ_INT(b.n_chunks, 1);
    CHECK(row_is_run(&b, 0, ids_of(4, 263, PHOTO, 264, 2568), 4, EOS)); /* "break" 2568 (oracle) */
    for (int i = 0; i < 77; i++)
        CHECK(b.weights[i] == 1.0f);
    sdxl_token_batch_free(&b);
    REQUIRE_OK(sdxl_tokenize_prompt(t, "(photo)", NULL, &b, &err), &err);
    CHECK(row_is_run(&b, 0, photos(1), 1, EOS) && b.weights[1] == 1.1f);
    sdxl_token_batch_free(&b);
    sdxl_tokenizer_free(t);
}

/* ---- hostile prompts ------------------------------------------------------------------ */

TEST(token_prompt_hostile_input) {
    sdxl_tokenizer *t = clip(SDXL_TOKENIZER_PAD_BANG);
    REQUIRE(t);
    sdxl_error err = {0};
    sdxl_token_batch b;
    sdxl_prompt_segments sg;

    char *deep = repeat("(", 10000);
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, deep, NULL, &b, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "brackets open at byte 100") != NULL);
    sdxl_free(deep);
    char *s = repeat("(", SDXL_PROMPT_MAX_DEPTH);
    char buf[256];
    snprintf(buf, sizeof buf, "%sphoto", s);
    REQUIRE_OK(sdxl_tokenize_prompt(t, buf, NULL, &b, &err), &err); /* 100 open: fine, x1.1^100 */
    CHECK_NEAR(b.weights[1], pow(1.1, 100), 1e-3 * pow(1.1, 100));
    sdxl_token_batch_free(&b);
    snprintf(buf, sizeof buf, "%s[photo", s);
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, buf, NULL, &b, &err), SDXL_STATUS_BAD_INPUT);
    sdxl_free(s);
    /* sad faces close nothing, but 200 of them open 200 brackets */
    s = repeat(":( ", 200);
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, s, NULL, &b, &err), SDXL_STATUS_BAD_INPUT);
    sdxl_free(s);

    /* weights: not a number (A1111 raises), too large for float */
    CHECK_EQ_INT(sdxl_prompt_parse("(a:1.2.3)", SDXL_PROMPT_A1111, &sg, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "\"1.2.3\"") != NULL && sg.seg == NULL);
    CHECK_EQ_INT(sdxl_prompt_parse("(a:.)", SDXL_PROMPT_A1111, &sg, &err), SDXL_STATUS_BAD_INPUT);
    CHECK_EQ_INT(sdxl_prompt_parse("(a:1e5)", SDXL_PROMPT_A1111, &sg, &err),
                 SDXL_STATUS_OK); /* text: no match */
    sdxl_prompt_segments_free(&sg);
    CHECK_EQ_INT(sdxl_prompt_parse("((a:1e30:9999999999999999999):99999999999999999999)", SDXL_PROMPT_A1111,
                                   &sg, &err),
                 SDXL_STATUS_BAD_INPUT);
    s = repeat("9", 200); /* 1e200: a double, but no float */
    snprintf(buf, sizeof buf, "(a:%s)", s);
    CHECK_EQ_INT(sdxl_prompt_parse(buf, SDXL_PROMPT_A1111, &sg, &err), SDXL_STATUS_BAD_INPUT);
    sdxl_free(s);

    /* invalid UTF-8, too long */
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, "(ok) \xc3\x28", NULL, &b, &err), SDXL_STATUS_BAD_INPUT);
    CHECK(strstr(err.msg, "byte 5") != NULL);
    s = repeat("(a) ", (1 << 20) / 4);
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, s, NULL, &b, &err), SDXL_STATUS_BAD_INPUT);
    sdxl_free(s);
    CHECK_EQ_INT(sdxl_tokenize_prompt(t, NULL, NULL, &b, &err), SDXL_STATUS_INVALID_ARG);
    CHECK_EQ_INT(sdxl_prompt_parse("a", (sdxl_prompt_syntax)9, &sg, &err), SDXL_STATUS_INVALID_ARG);

    /* random prompts over the syntax alphabet: OK or BAD_INPUT, never more */
    static const char *const alpha[] = {"(",       ")",           "[",     "]",        ":",
                                        "\\",      "1.2",         ":0.5)", " ",        "BREAK",
                                        "photo",   ",",           "!",     "\xc3\xa9", "<|endoftext|>",
                                        ":1.2.3)", "\xe4\xb8\xad"};
    uint64_t rng = 12345;
    char *text = sdxl_malloc(4096);
    sdxl_prompt_params p = sdxl_prompt_default_params();
    p.max_chunks = 1000;
    for (int r = 0; r < 400; r++) {
        size_t n = 0;
        int len = (int)((rng >> 33) % 300);
        for (int i = 0; i < len; i++) {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            const char *a = alpha[(rng >> 33) % (sizeof alpha / sizeof *alpha)];
            size_t l = strlen(a);
            if (n + l >= 4096) break;
            memcpy(text + n, a, l);
            n += l;
        }
        text[n] = 0;
        rng = rng * 6364136223846793005ull + 1442695040888963407ull;
        p.long_mode = r % 2 ? SDXL_LONG_TRUNCATE : SDXL_LONG_CHUNK;
        sdxl_status st = sdxl_tokenize_prompt(t, text, &p, &b, &err);
        CHECK_MSG(st == SDXL_STATUS_OK || st == SDXL_STATUS_BAD_INPUT, "status %d for \"%s\"", st, text);
        if (st) continue;
        CHECK(b.n_chunks >= 1 && (p.long_mode == SDXL_LONG_CHUNK || b.n_chunks == 1));
        for (int c = 0; c < b.n_chunks; c++)
            CHECK(b.ids[c * 77] == BOS);
        for (int i = 0; i < b.n_chunks * 77; i++)
            CHECK(isfinite(b.weights[i]) && b.ids[i] >= 0 && b.ids[i] < 49408);
        sdxl_token_batch_free(&b);
    }
    sdxl_free(text);
    sdxl_tokenizer_free(t);
}
