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
    cd_idmap_slot *slots = calloc(cap, sizeof(*slots));
    if (slots == NULL)
        return CONDUIT_ENOMEM;
    cd_idmap old = *m;
    m->slots = slots;
    m->cap = cap;
    m->count = 0;
    for (size_t i = 0; i < old.cap; i++)
        if (old.slots[i].key)
            cd_idmap_put(m, old.slots[i].key, old.slots[i].value);
    free(old.slots);
    return 0;
}

int cd_idmap_put(cd_idmap *m, uint64_t key, void *value)
{
    /* Keep the load under 1/2 so probes stay short. */
    if ((m->count + 1) * 2 > m->cap && grow(m) != 0)
        return CONDUIT_ENOMEM;
    size_t i = slot_of(m, key);
    while (m->slots[i].key && m->slots[i].key != key)
        i = (i + 1) & (m->cap - 1);
    if (m->slots[i].key == 0)
        m->count++;
    m->slots[i].key = key;
    m->slots[i].value = value;
    return 0;
}

void *cd_idmap_get(const cd_idmap *m, uint64_t key)
{
    if (m->cap == 0)
        return NULL;
    for (size_t i = slot_of(m, key); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (m->slots[i].key == key)
            return m->slots[i].value;
    return NULL;
}

void cd_idmap_del(cd_idmap *m, uint64_t key)
{
    if (m->cap == 0)
        return;
    size_t i = slot_of(m, key);
    while (m->slots[i].key != key) {
        if (m->slots[i].key == 0)
            return;
        i = (i + 1) & (m->cap - 1);
    }
    /* Backward-shift: move later members of the probe run into the hole
     * when their home slot allows it. */
    size_t hole = i;
    for (size_t j = (i + 1) & (m->cap - 1); m->slots[j].key; j = (j + 1) & (m->cap - 1)) {
        size_t home = slot_of(m, m->slots[j].key);
        if (((j - home) & (m->cap - 1)) >= ((j - hole) & (m->cap - 1))) {
            m->slots[hole] = m->slots[j];
            hole = j;
        }
    }
    m->slots[hole].key = 0;
    m->slots[hole].value = NULL;
    m->count--;
}

void cd_idmap_free(cd_idmap *m)
{
    free(m->slots);
    m->slots = NULL;
    m->cap = m->count = 0;
}
