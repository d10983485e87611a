/* buf.c - growable byte buffers and shared, reference-counted frames. */
#include "buf.h"

#include <stdlib.h>
#include <string.h>

#include "conduit.h"

int cd_bytes_reserve(cd_bytes *b, size_t extra)
{
    if (b->cap - b->len >= extra)
        return 0;
    if (extra > SIZE_MAX / 2 - b->len)
        return CONDUIT_ENOMEM;
    size_t want = b->len + extra;
    size_t cap = b->cap ? b->cap : 64;
    while (cap < want)
        cap *= 2;
    uint8_t *p = realloc(b->data, cap);
    if (p == NULL)
        return CONDUIT_ENOMEM;
    b->data = p;
    b->cap = cap;
    return 0;
}

int cd_bytes_append(cd_bytes *b, const void *data, size_t len)
{
    if (len == 0)
        return 0;
    int rc = cd_bytes_reserve(b, len);
    if (rc != 0)
        return rc;
    memcpy(b->data + b->len, data, len);
    b->len += len;
    return 0;
}

void cd_bytes_consume(cd_bytes *b, size_t n)
{
    if (n >= b->len) {
        b->len = 0;
        return;
    }
    memmove(b->data, b->data + n, b->len - n);
    b->len -= n;
}

void cd_bytes_free(cd_bytes *b)
{
    free(b->data);
    b->data = NULL;
    b->len = 0;
    b->cap = 0;
}

cd_frame *cd_frame_alloc(size_t cap)
{
    if (cap > UINT32_MAX)
        return NULL;
    cd_frame *f = malloc(sizeof(*f) + cap);
    if (f == NULL)
        return NULL;
    atomic_init(&f->refs, 1);
    f->len = 0;
    f->cap = (uint32_t)cap;
    return f;
}

cd_frame *cd_frame_copy(const void *data, size_t len)
{
    cd_frame *f = cd_frame_alloc(len);
    if (f == NULL)
        return NULL;
    if (len > 0)
        memcpy(f->data, data, len);
    f->len = (uint32_t)len;
    return f;
}

cd_frame *cd_frame_ref(cd_frame *f)
{
    /* Taking a reference needs no ordering: the caller already holds one. */
    atomic_fetch_add_explicit(&f->refs, 1, memory_order_relaxed);
    return f;
}

void cd_frame_unref(cd_frame *f)
{
    if (f == NULL)
        return;
    /* acq_rel: each release publishes this owner's reads and writes, and
     * the last owner acquires them all before freeing.  (A release
     * decrement plus an acquire fence would do, but ThreadSanitizer does
     * not model fences; on x86 both are one locked instruction.) */
    if (atomic_fetch_sub_explicit(&f->refs, 1, memory_order_acq_rel) == 1)
        free(f);
}
