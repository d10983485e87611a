/* buf.h - byte buffers.
 *
 * cd_bytes is a growable buffer owned by exactly one object (a parser, a
 * connection).  cd_frame is an immutable, reference-counted buffer that holds
 * one or more complete wire frames; it is built once and shared by every send
 * queue it is appended to (a publish to N subscribers costs one cd_frame and
 * N references).  The reference count is atomic because a frame built on one
 * worker is released on others. */
#ifndef CD_BUF_H
#define CD_BUF_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

typedef struct cd_bytes {
    uint8_t *data;
    size_t len;
    size_t cap;
} cd_bytes;

/* An empty buffer owns no memory; cd_bytes_free returns it to that state. */
#define CD_BYTES_INIT {NULL, 0, 0}

/* Ensure room for `extra` more bytes.  Returns 0 or CONDUIT_ENOMEM. */
int cd_bytes_reserve(cd_bytes *b, size_t extra);
/* Append `len` bytes (copied).  Returns 0 or CONDUIT_ENOMEM. */
int cd_bytes_append(cd_bytes *b, const void *data, size_t len);
/* Drop the first `n` bytes (memmove of the rest). */
void cd_bytes_consume(cd_bytes *b, size_t n);
/* Release the memory; the buffer is empty and reusable afterwards. */
void cd_bytes_free(cd_bytes *b);

typedef struct cd_frame {
    atomic_uint refs;
    uint32_t len;        /* bytes used in data[] */
    uint32_t cap;        /* bytes allocated for data[] */
    uint8_t data[];
} cd_frame;

/* Allocate a frame with room for `cap` bytes, refcount 1, len 0.
 * Returns NULL on allocation failure. */
cd_frame *cd_frame_alloc(size_t cap);
/* Allocate a frame holding a copy of [data, data+len). */
cd_frame *cd_frame_copy(const void *data, size_t len);
/* Take one more reference; returns `f` for call chaining. */
cd_frame *cd_frame_ref(cd_frame *f);
/* Drop one reference; the last one frees the frame.  NULL is ignored. */
void cd_frame_unref(cd_frame *f);

#endif
