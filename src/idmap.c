/* idmap.c - connection id -> connection (see idmap.h). */
#include "idmap.h"

#include <stdlib.h>

#include "conduit.h"

static size_t slot_of(const cd_idmap *m, uint64_t key)
{
    /* Ids are sequential per worker; a multiplicative hash spreads them. */
    return (size_t)((key * 0x9e3779b97f4a7c15ull) >> 20) & (m->cap - 1);
}

static int grow(cd_idmap *m)
{
    size_t cap = m->cap ? m->cap * 2 : 64;
    void **slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return CONDUIT_ENOMEM;
    void **old = m->slots;
    size_t old_cap = m->cap;
    m->slots = slots;
    m->cap = cap;
    m->count = 0;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i])
            cd_idmap_put(m, old[i]); /* cannot fail: room was made above */
    free(old);
    return 0;
}

int cd_idmap_put(cd_idmap *m, void *value)
{
    /* Keep the load at or under 3/4 so probes stay short. */
    if ((m->count + 1) * 4 > m->cap * 3 && grow(m) != 0)
        return CONDUIT_ENOMEM;
    uint64_t key = m->key_of(value);
    size_t i = slot_of(m, key);
    while (m->slots[i] && m->key_of(m->slots[i]) != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i] == NULL)
        m->count++;
    m->slots[i] = value;
    return 0;
}

void *cd_idmap_get(const cd_idmap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(m, key); m->slots[i]; i = (i + 1) & (m->cap - 1))
        if (m->key_of(m->slots[i]) == key)
            return m->slots[i];
    return NULL;
}

void cd_idmap_del(cd_idmap *m, uint64_t key)
{
    if (m->cap == 0)
        return;
    size_t i = slot_of(m, key);
    while (m->slots[i] == NULL || m->key_of(m->slots[i]) != key) {
        if (m->slots[i] == NULL)
            return;
        i = (i + 1) & (m->cap - 1);
    }
    /* Backward-shift: move later members of the probe run into the hole
     * when their home slot allows it. */
    size_t hole = i;
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j]; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->key_of(m->slots[j]));
        if (((j - home) & (m->cap - 1)) >= ((j - hole) & (m->cap - 1))) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole] = NULL;
    m->count--;
}

void cd_idmap_free(cd_idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
