/*
 * ember.h - the C API of Ember, an embedded-friendly LLM inference runtime.
 *
 * Link with libember.a (static) or libember.so (shared); `pkg-config --cflags
 * --libs ember` (static: `--static`) gives the flags. The header is C99 and C++.
 *
 * Conventions
 * -----------
 * - Every function that can fail returns an ember_status; EMBER_OK is 0. On
 *   failure ember_last_error() gives a readable message (thread-local). No Rust
 *   panic crosses into C: an internal error returns EMBER_ERR_INTERNAL. Codes
 *   are only ever appended: treat a code you do not know as a failure.
 * - Every pointer argument is checked: NULL where one is required returns
 *   EMBER_ERR_INVALID_ARGUMENT. Out-parameters are written only on success,
 *   except the required sizes reported with EMBER_ERR_BUFFER_TOO_SMALL and
 *   handle outputs (`ember_xxx **out`), which are set to NULL on failure.
 * - Text is UTF-8, NUL-terminated on input. Text outputs go to a caller buffer
 *   `(char *buf, size_t capacity, size_t *len)`: *len receives the text length
 *   in bytes without the NUL; the text and a NUL are written when capacity >=
 *   *len + 1, otherwise EMBER_ERR_BUFFER_TOO_SMALL is returned and *len still
 *   tells the size needed (`buf` may be NULL when `capacity` is 0).
 * - Handles (ember_model, ember_session, ember_sampler) are opaque. Every
 *   *_free(NULL) is a no-op; using a handle after freeing it is undefined.
 * - Structs passed in carry their own size (`struct_size`, the first field, =
 *   sizeof as compiled by the caller): fill them with the *_default() function,
 *   then change fields. A library newer than the header accepts older (smaller)
 *   structs and uses defaults for the fields they lack; an older library
 *   rejects a larger struct with EMBER_ERR_UNSUPPORTED. Output structs
 *   (ember_model_info, ember_generate_result) also start with struct_size, set
 *   by the caller; the library writes only that many bytes.
 *
 * Thread safety
 * -------------
 * - An ember_model is immutable: it may be shared by any number of threads and
 *   sessions. Sessions keep their model alive: the model handle may be freed
 *   before its sessions (the memory is released with the last of them).
 * - An ember_session (and an ember_sampler) belongs to one thread at a time;
 *   the only call allowed from another thread is ember_session_cancel().
 *   (Concurrent calls on one session are serialised internally, never corrupt
 *   it, but their order is unspecified.)
 * - ember_last_error() is per thread.
 * - Reentrancy: inside ember_generate's callback, every call on the same
 *   session returns EMBER_ERR_STATE without touching it, except
 *   ember_session_cancel (allowed) and ember_session_free (ignored, with a
 *   message: free the session after ember_generate returns). Other sessions,
 *   models and samplers may be used there.
 * - Stack: prefill and decode run kernels on the calling thread (worker
 *   threads for threads > 1 are Ember's own, with 2 MiB stacks). Give a
 *   calling thread at least 256 KiB of stack: the batched prefill kernels keep
 *   64 KiB of per-call terms on the stack, and the `ember` CLI's main thread
 *   needed 97-112 KiB in total (musl's default of 128 KiB for new threads
 *   leaves little margin; glibc's default is 8 MiB).
 *
 * Memory: a session sizes every buffer at creation (optionally inside a caller
 * arena); generating a token allocates nothing. Allocations whose size the
 * caller or a file decides (a session's buffers and worker threads, a state's
 * application data, a LoRA adapter, copies of the arrays passed in or of a
 * model buffer) return EMBER_ERR_OUT_OF_MEMORY when the system refuses them,
 * and a session larger than the address space is refused before anything is
 * allocated. ember_tokenize first reserves the encoder's peak (48 bytes per
 * byte of text) and returns EMBER_ERR_OUT_OF_MEMORY if it cannot. A chat
 * template renders within a memory limit (16 MiB + 16 bytes per byte of
 * allowed output); past it, EMBER_ERR_TEMPLATE, and the rendering thread stays
 * asleep holding that memory (it cannot be unwound); the same template is then
 * refused at once, so this happens once per template. Small fixed-size
 * allocations still abort on failure, as in Rust's standard library. An OS
 * that overcommits (Linux
 * vm.overcommit_memory=1) may grant a session that does not fit and kill the
 * process once it is used: compare ember_session_memory_required with the
 * memory at hand.
 */
#ifndef EMBER_H
#define EMBER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ABI version: changes when a function signature or a struct layout changes
 * incompatibly. Compare with ember_abi_version() at run time. */
#define EMBER_ABI_VERSION 1
/* Library version (also ember_version()). */
#define EMBER_VERSION "0.1.0"

/* ---------------------------------------------------------------- status */

typedef enum ember_status {
    EMBER_OK = 0,
    /* A NULL pointer, a zero or out-of-range size, a bad setting or non-UTF-8 text. */
    EMBER_ERR_INVALID_ARGUMENT = 1,
    /* The output buffer is too small; the size needed was reported. */
    EMBER_ERR_BUFFER_TOO_SMALL = 2,
    /* A file could not be opened, read or written. */
    EMBER_ERR_IO = 3,
    /* A model or state file is corrupt, truncated or of another version/model. */
    EMBER_ERR_FORMAT = 4,
    /* A token id is not below the vocabulary size. */
    EMBER_ERR_TOKEN_OUT_OF_RANGE = 5,
    /* The session's context is full (context policy EMBER_CONTEXT_ERROR). */
    EMBER_ERR_CONTEXT_FULL = 6,
    /* No chat template, or the template failed or rejected the messages. */
    EMBER_ERR_TEMPLATE = 7,
    /* The call is not valid in the object's state (e.g. no logits yet). */
    EMBER_ERR_STATE = 8,
    /* Not supported by this build (e.g. a struct from a newer ember.h). */
    EMBER_ERR_UNSUPPORTED = 9,
    /* A bug in Ember (a caught panic); the session, if any, is unusable. */
    EMBER_ERR_INTERNAL = 10,
    /* The system refused memory (or threads) the call needed, e.g. a session
     * for a context that does not fit; the message names the size, the buffer
     * and the setting to lower. Objects are unchanged (ember_session_load and
     * ember_session_state_read reset the session, as on any failure). */
    EMBER_ERR_OUT_OF_MEMORY = 11
} ember_status;

/* ---------------------------------------------------------------- library */

/* The library version, e.g. "0.1.0" (static string). */
const char *ember_version(void);
/* The EMBER_ABI_VERSION the library was built with. */
uint32_t ember_abi_version(void);
/* The message of the last failed call on this thread ("" if none). Valid until
 * the next failing call on this thread. Never NULL. */
const char *ember_last_error(void);
/* A static name for a status code ("EMBER_OK", ...; "unknown status"). */
const char *ember_status_name(ember_status status);

/* ---------------------------------------------------------------- model */

typedef struct ember_model ember_model;
/* A token id. */
typedef uint32_t ember_token;
/* "No token": ember_model_special_token() for an absent special token, and the
 * token of the final text flush in ember_generate's callback. */
#define EMBER_TOKEN_NONE UINT32_MAX

/* Memory-maps and validates an .ember file. The file must not be modified
 * while the model (or a session of it) exists. */
ember_status ember_model_load(const char *path, ember_model **out);

/* ember_model_from_buffer flags. */
#define EMBER_BUFFER_COPY 1u /* always copy the image */

/* Validates a complete .ember file image in memory (`len` > 0 bytes). Without
 * EMBER_BUFFER_COPY and with `data` 64-byte aligned the image is used in place
 * (zero copy: e.g. a model in flash or in a read-only mapping); the caller must
 * then keep it alive and unchanged until the model and all its sessions are
 * freed. Otherwise the image is copied and may be released after the call. */
ember_status ember_model_from_buffer(const void *data, size_t len, uint32_t flags,
                                     ember_model **out);

/* Releases the handle (sessions keep the model alive). NULL: no-op. */
void ember_model_free(ember_model *model);

/* ember_model_info.storage values. */
#define EMBER_STORAGE_MAPPED 0u   /* memory-mapped file */
#define EMBER_STORAGE_COPY 1u     /* owned copy */
#define EMBER_STORAGE_BORROWED 2u /* the caller's buffer, in place */

typedef struct ember_model_info {
    size_t struct_size; /* set by the caller: sizeof(ember_model_info) */
    uint32_t vocab_size;
    uint32_t max_context; /* positions the model was trained for */
    uint32_t n_layers;
    uint32_t dim;
    uint32_t n_heads;
    uint32_t n_kv_heads;
    uint64_t n_params;
    uint32_t storage;           /* EMBER_STORAGE_* */
    uint32_t has_chat_template; /* 1 if the file carries a chat template */
} ember_model_info;

ember_status ember_model_info_get(const ember_model *model, ember_model_info *info);

/* ---------------------------------------------------------------- tokenizer */

/* ember_tokenize flags (0 = the model's defaults: BOS if the model adds one,
 * special-token text such as "<|im_start|>" recognised). */
#define EMBER_TOKENIZE_NO_BOS 1u     /* never prepend BOS */
#define EMBER_TOKENIZE_NO_SPECIAL 2u /* encode special-token text as plain text */

/* Encodes `text` into `tokens` (room for `capacity`). *n_tokens receives the
 * number of tokens; EMBER_ERR_BUFFER_TOO_SMALL if more than `capacity` (then
 * nothing is written; `tokens` may be NULL when `capacity` is 0). */
ember_status ember_tokenize(const ember_model *model, const char *text, uint32_t flags,
                            ember_token *tokens, size_t capacity, size_t *n_tokens);

/* Decodes `n` tokens into text (buffer convention above). Invalid UTF-8 byte
 * sequences become U+FFFD. */
ember_status ember_detokenize(const ember_model *model, const ember_token *tokens, size_t n,
                              char *buf, size_t capacity, size_t *len);

/* The raw bytes of one token's text (may be part of a UTF-8 character, so not
 * necessarily valid UTF-8 alone; buffer convention above). */
ember_status ember_token_text(const ember_model *model, ember_token token, char *buf,
                              size_t capacity, size_t *len);

typedef enum ember_special {
    EMBER_SPECIAL_BOS = 0,
    EMBER_SPECIAL_EOS = 1,
    EMBER_SPECIAL_UNK = 2,
    EMBER_SPECIAL_PAD = 3
} ember_special;

/* The id of a special token, or EMBER_TOKEN_NONE if the model has none. */
ember_status ember_model_special_token(const ember_model *model, ember_special which,
                                       ember_token *token);

/* *is_eog = 1 if generating `token` ends the turn (EOS or an end-of-turn token). */
ember_status ember_token_is_end_of_generation(const ember_model *model, ember_token token,
                                              int *is_eog);

/* ---------------------------------------------------------------- chat */

typedef struct ember_chat_message {
    const char *role;    /* "system", "user", "assistant", ... */
    const char *content;
} ember_chat_message;

/* Renders `messages` with a Jinja chat template as Hugging Face transformers'
 * apply_chat_template does. `template_source` NULL = the model's own template
 * (EMBER_ERR_TEMPLATE if it has none). add_generation_prompt != 0 appends the
 * assistant opener. Buffer convention above. Tokenize the text with
 * EMBER_TOKENIZE_NO_BOS, as transformers does: a template writes its own BOS. */
ember_status ember_chat_render(const ember_model *model, const char *template_source,
                               const ember_chat_message *messages, size_t n_messages,
                               int add_generation_prompt, char *buf, size_t capacity,
                               size_t *len);

/* The source of a built-in template ("chatml", "llama2", "llama3", "gemma"), a
 * static string; NULL for an unknown name. */
const char *ember_chat_builtin_template(const char *name);

/* ---------------------------------------------------------------- session */

typedef struct ember_session ember_session;

/* ember_session_config.kv_type values. */
#define EMBER_KV_F32 0u
#define EMBER_KV_F16 1u
#define EMBER_KV_Q8_0 2u
/* ember_session_config.context_policy values. */
#define EMBER_CONTEXT_ERROR 0u /* a full context is an error (EMBER_ERR_CONTEXT_FULL) */
#define EMBER_CONTEXT_SHIFT 1u /* keep `keep` tokens, drop the oldest half of the rest */

typedef struct ember_session_config {
    size_t struct_size;      /* sizeof(ember_session_config) */
    uint32_t context;        /* positions; 0 = the model's max_context. Default 0 */
    uint32_t kv_type;        /* EMBER_KV_*; default EMBER_KV_F16 */
    uint32_t threads;        /* worker threads; 0 = one per physical core. Default 0 */
    uint32_t batch;          /* prompt tokens per prefill batch, >= 1; default 512 */
    uint32_t context_policy; /* EMBER_CONTEXT_*; default EMBER_CONTEXT_ERROR */
    uint32_t keep;           /* tokens a shift keeps (keep + 2 <= context); default 0 */
} ember_session_config;

/* Fills `config` with the defaults; `struct_size` = sizeof(*config). */
ember_status ember_session_config_default(ember_session_config *config, size_t struct_size);

/* Memory a session with `config` (NULL = defaults) needs, each out optional:
 * heap_bytes   - what ember_session_new allocates in total;
 * arena_bytes  - the arena size ember_session_new_in requires;
 * arena_heap_bytes - what ember_session_new_in takes from the heap besides the
 *                    arena: 0 (worker threads for threads > 1 are not counted).
 * SIZE_MAX when the size does not fit a size_t (no such session can be made). */
ember_status ember_session_memory_required(const ember_model *model,
                                           const ember_session_config *config,
                                           size_t *heap_bytes, size_t *arena_bytes,
                                           size_t *arena_heap_bytes);

/* Creates a session (every buffer allocated now). `config` NULL = defaults.
 * EMBER_ERR_OUT_OF_MEMORY when the buffers (heap_bytes above) or the worker
 * threads cannot be had: lower the context, the batch or the threads. */
ember_status ember_session_new(const ember_model *model, const ember_session_config *config,
                               ember_session **out);

/* Creates a session whose KV cache, token history and RoPE table live in the
 * caller's `arena` (any alignment, at least `arena_bytes` of
 * ember_session_memory_required, else EMBER_ERR_INVALID_ARGUMENT). The arena
 * must stay valid and untouched until ember_session_free. */
ember_status ember_session_new_in(const ember_model *model, const ember_session_config *config,
                                  void *arena, size_t arena_len, ember_session **out);

/* Frees the session (not the arena). NULL: no-op. Ignored when called from
 * inside the session's own ember_generate callback (see Reentrancy). */
void ember_session_free(ember_session *session);

/* Forgets every token. */
ember_status ember_session_reset(ember_session *session);

/* Feeds `n` >= 1 tokens; afterwards the logits predict the next token. Checks
 * every id and (policy EMBER_CONTEXT_ERROR) the room before changing state. */
ember_status ember_session_eval(ember_session *session, const ember_token *tokens, size_t n);

/* The logits (n_vocab floats) predicting the token after the last one fed.
 * Valid until the next call that changes the session. EMBER_ERR_STATE if there
 * are none (nothing fed since creation, reset or truncate). */
ember_status ember_session_logits(ember_session *session, const float **logits,
                                  size_t *n_vocab);

/* The tokens in the context (positions 0..n-1), valid until the next call that
 * changes the session. */
ember_status ember_session_tokens(ember_session *session, const ember_token **tokens,
                                  size_t *n);

/* Keeps the first `n` tokens (n <= the current count). EMBER_ERR_INVALID_ARGUMENT,
 * session unchanged, when the model's sliding-window layers keep only their
 * window (sessions without the shift policy) and no longer hold what position
 * n attends to; n = 0 always works. */
ember_status ember_session_truncate(ember_session *session, size_t n);

/* Saves the state (tokens, last logits, KV cache) to a file / restores it. The
 * state must come from the same model file and KV type and fit the context;
 * otherwise (or a corrupt file) EMBER_ERR_FORMAT, and the session is reset. */
ember_status ember_session_save(ember_session *session, const char *path);
ember_status ember_session_load(ember_session *session, const char *path);

/* The same state in memory (buffer convention above, without a NUL: *len is
 * the state size, `buf` needs capacity >= *len). */
ember_status ember_session_state_write(ember_session *session, void *buf, size_t capacity,
                                       size_t *len);
ember_status ember_session_state_read(ember_session *session, const void *buf, size_t len);

/* Asks the ember_generate running on `session` to stop before its next token
 * (or its next prompt batch); it then returns EMBER_OK with stop reason
 * EMBER_STOP_CANCELLED. The one call that may come from another thread while
 * the session is in use. A cancel with no generation running is forgotten
 * when the next ember_generate starts. */
ember_status ember_session_cancel(ember_session *session);

/* ---------------------------------------------------------------- LoRA adapters */

typedef struct ember_lora ember_lora;

/* Loads a LoRA adapter saved by Hugging Face PEFT or `ember finetune`: the
 * directory holding adapter_model.safetensors and adapter_config.json, for
 * `model` (EMBER_ERR_FORMAT names the problem: another base model's shapes,
 * an unsupported PEFT option, a damaged file). Loading copies the adapter
 * (f32); it is shared by every session it is attached to. */
ember_status ember_lora_load(const ember_model *model, const char *dir, ember_lora **out);

/* Releases the handle (attached sessions keep the adapter alive). NULL: no-op. */
void ember_lora_free(ember_lora *lora);

/* Attaches `lora` with `scale` (1.0 = as trained; the product adds
 * scale * alpha/r * B A x) or, with `lora` NULL, detaches it. Resets the
 * session (its cache was computed without the adapter). An adapter loaded for
 * another model, or a non-finite scale: EMBER_ERR_INVALID_ARGUMENT, session
 * unchanged. */
ember_status ember_session_set_lora(ember_session *session, const ember_lora *lora, float scale);

/* ---------------------------------------------------------------- sampling */

typedef struct ember_logit_bias {
    ember_token token;
    float bias; /* added to the logit; -INFINITY bans the token */
} ember_logit_bias;

/* Sampling chain: logit bias -> penalties -> top-k -> top-p -> min-p ->
 * temperature -> draw (greedy when temperature is 0). */
typedef struct ember_sampler_config {
    size_t struct_size;      /* sizeof(ember_sampler_config) */
    float temperature;       /* 0 = greedy (default) */
    uint32_t top_k;          /* 0 = off; default 40 (with temperature > 0) */
    float top_p;             /* 1 = off; default 0.95 */
    float min_p;             /* 0 = off; default 0.05 */
    float repeat_penalty;    /* 1 = off (default) */
    uint32_t repeat_last_n;  /* penalty window in tokens; default 64 */
    float presence_penalty;  /* 0 = off (default) */
    float frequency_penalty; /* 0 = off (default) */
    uint64_t seed;           /* same seed and logits, same tokens; default 0 */
    const ember_logit_bias *logit_bias; /* n_logit_bias entries (copied); default NULL */
    size_t n_logit_bias;
} ember_sampler_config;

/* Fills `config` with the defaults (greedy); `struct_size` = sizeof(*config). */
ember_status ember_sampler_config_default(ember_sampler_config *config, size_t struct_size);

/* A stand-alone sampler for manual loops over ember_session_logits. */
typedef struct ember_sampler ember_sampler;
ember_status ember_sampler_new(const ember_model *model, const ember_sampler_config *config,
                               ember_sampler **out);
void ember_sampler_free(ember_sampler *sampler);
/* Picks a token from `n` logits (n = the vocabulary size). */
ember_status ember_sampler_sample(ember_sampler *sampler, const float *logits, size_t n,
                                  ember_token *token);
/* Records a token (prompt or generated) for the penalties. */
ember_status ember_sampler_accept(ember_sampler *sampler, ember_token token);
/* Forgets the history and restarts the random sequence from the seed. */
ember_status ember_sampler_reset(ember_sampler *sampler);

/* ---------------------------------------------------------------- generation */

/* Receives each generated token with the text it completes (`len` bytes, also
 * NUL-terminated; possibly empty: an incomplete UTF-8 character, or text held
 * back because it may start a stop sequence). A final call with token
 * EMBER_TOKEN_NONE carries remaining text. Return 0 to go on, non-zero to
 * stop (stop reason EMBER_STOP_CALLBACK). `text` is valid during the call only.
 * The session is busy meanwhile: calls on it from the callback return
 * EMBER_ERR_STATE, except ember_session_cancel (see Reentrancy). */
typedef int (*ember_token_callback)(void *user_data, ember_token token, const char *text,
                                    size_t len);

typedef struct ember_generate_options {
    size_t struct_size;           /* sizeof(ember_generate_options) */
    uint32_t max_tokens;          /* tokens to generate at most; default 256 */
    int ignore_eos;               /* non-zero: go on past end-of-generation tokens */
    const char *const *stop;      /* n_stop non-empty stop strings (not emitted) */
    size_t n_stop;
} ember_generate_options;

ember_status ember_generate_options_default(ember_generate_options *options,
                                            size_t struct_size);

/* ember_generate_result.stop_reason values. */
#define EMBER_STOP_MAX_TOKENS 0u
#define EMBER_STOP_END_OF_GENERATION 1u
#define EMBER_STOP_STOP_SEQUENCE 2u
#define EMBER_STOP_CONTEXT_FULL 3u
#define EMBER_STOP_CALLBACK 4u  /* the callback returned non-zero */
#define EMBER_STOP_CANCELLED 5u /* ember_session_cancel */

typedef struct ember_generate_result {
    size_t struct_size; /* set by the caller: sizeof(ember_generate_result) */
    uint32_t stop_reason;
    uint32_t prompt_tokens;
    uint32_t generated_tokens;
    double prefill_seconds;
    double decode_seconds;
} ember_generate_result;

/* Feeds `prompt` (n_prompt tokens; may be 0 when the session already has
 * logits) and generates, streaming text to `callback` (may be NULL).
 * `sampler` NULL = greedy, `options` NULL = defaults, `result` may be NULL.
 * The token that ends generation (EOS, stop sequence) is not fed to the
 * session, so the session can continue the conversation. Every argument is
 * checked before the session changes; a cancel during the prompt leaves the
 * prompt tokens fed so far in the session (see ember_session_tokens). */
ember_status ember_generate(ember_session *session, const ember_token *prompt, size_t n_prompt,
                            const ember_sampler_config *sampler,
                            const ember_generate_options *options, ember_token_callback callback,
                            void *user_data, ember_generate_result *result);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* EMBER_H */
