/*
 * ct.c - connection tracking table: index, insertion, eviction, expiry.
 *
 * Theory of operation.  Every connection lives in one slot of a preallocated
 * array and is reachable through two hash chains, one per direction, so a
 * packet of either direction finds it with one lookup (as in Linux, where
 * each nf_conn has two tuplehash entries).  The chains hold node ids, slot *
 * 2 + direction, which keeps the links at four bytes.  The bucket count is
 * the smallest power of two at or above the capacity, so at capacity the
 * average chain has two nodes.
 *
 * Expiry is an absolute deadline written on every packet.  Nothing is timed
 * here: lookups drop expired entries they meet (lazy reaping), and
 * ct_sweep() walks a bounded slice of slots per call, so the control plane
 * decides the pace.  When the table is full, ct_alloc() looks at a few
 * buckets near the new flow for an entry that is expired or not ASSURED and
 * evicts it, exactly one; an ASSURED entry is never evicted.
 */
#include <stdlib.h>
#include <string.h>
#include "ct.h"

static uint64_t mix64(uint64_t h)
{
    /* Final mixer of MurmurHash3 (fmix64). */
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

/* Keyed hash of the 40 tuple bytes.  Mirrors struct ct_tuple. */
static uint32_t ct_hash(const struct ct_table *ct, const struct ct_tuple *t)
{
    uint64_t w[5];
    memcpy(w, t, sizeof w);
    uint64_t h = ct->seed;
    for (int i = 0; i < 5; i++)
        h = mix64(h ^ w[i]) + 0x9e3779b97f4a7c15ULL;
    return (uint32_t)(h ^ (h >> 32));
}

static inline uint32_t node_slot(uint32_t node) { return node >> 1; }
static inline unsigned node_dir(uint32_t node) { return node & 1u; }

int ct_init(struct ct_table *ct, uint32_t capacity, uint64_t seed,
            uint64_t *counters)
{
    memset(ct, 0, sizeof *ct);
    if (capacity == 0 || capacity > (1u << 30))
        return -1;
    uint32_t nb = 1;
    while (nb < capacity)
        nb <<= 1;
    ct->conns = calloc(capacity, sizeof *ct->conns);
    ct->buckets = malloc((size_t)nb * sizeof *ct->buckets);
    ct->free_slots = malloc((size_t)capacity * sizeof *ct->free_slots);
    if (!ct->conns || !ct->buckets || !ct->free_slots) {
        ct_destroy(ct);
        return -1;
    }
    memset(ct->buckets, 0xff, (size_t)nb * sizeof *ct->buckets);
    /* Hand out low slots first: the sweep then finds them close together. */
    for (uint32_t i = 0; i < capacity; i++)
        ct->free_slots[i] = capacity - 1 - i;
    ct->n_free = capacity;
    ct->capacity = capacity;
    ct->bucket_mask = nb - 1;
    ct->seed = seed;
    ct->counters = counters;
    return 0;
}

void ct_destroy(struct ct_table *ct)
{
    free(ct->conns);
    free(ct->buckets);
    free(ct->free_slots);
    memset(ct, 0, sizeof *ct);
}

static void unlink_node(struct ct_table *ct, struct ct_conn *c, unsigned d)
{
    uint32_t node = ct_slot(ct, c) * 2 + d;
    uint32_t *link = &ct->buckets[ct_hash(ct, &c->tuple[d]) & ct->bucket_mask];
    /* Chains are short (two nodes on average at capacity). */
    while (*link != CT_NIL) {
        if (*link == node) {
            *link = c->next[d];
            return;
        }
        struct ct_conn *o = &ct->conns[node_slot(*link)];
        link = &o->next[node_dir(*link)];
    }
}

static void free_slot(struct ct_table *ct, struct ct_conn *c)
{
    uint32_t slot = ct_slot(ct, c);
    memset(c, 0, sizeof *c);
    ct->free_slots[ct->n_free++] = slot;
}

void ct_delete(struct ct_table *ct, struct ct_conn *c)
{
    unlink_node(ct, c, CT_DIR_ORIGINAL);
    unlink_node(ct, c, CT_DIR_REPLY);
    free_slot(ct, c);
    ct->count--;
}

void ct_release(struct ct_table *ct, struct ct_conn *c)
{
    free_slot(ct, c);
}

static struct ct_conn *find_node(struct ct_table *ct,
                                 const struct ct_tuple *key, uint64_t now_ms,
                                 unsigned *dir)
{
    uint32_t node = ct->buckets[ct_hash(ct, key) & ct->bucket_mask];
    while (node != CT_NIL) {
        struct ct_conn *c = &ct->conns[node_slot(node)];
        unsigned d = node_dir(node);
        if (memcmp(&c->tuple[d], key, sizeof *key) == 0) {
            if (c->expires_ms <= now_ms) {
                ct_delete(ct, c);
                ct->counters[RT_CNT_EXPIRED]++;
                return NULL;
            }
            *dir = d;
            return c;
        }
        node = c->next[d];
    }
    return NULL;
}

struct ct_conn *ct_find(struct ct_table *ct, const struct ct_tuple *key,
                        uint64_t now_ms, enum ct_dir *dir)
{
    unsigned d = 0;
    struct ct_conn *c = find_node(ct, key, now_ms, &d);
    *dir = (enum ct_dir)d;
    return c;
}

bool ct_tuple_in_use(struct ct_table *ct, const struct ct_tuple *key,
                     uint64_t now_ms)
{
    unsigned d;
    return find_node(ct, key, now_ms, &d) != NULL;
}

/* Evicts one expired or non-ASSURED connection found in the buckets at and
 * after the one of 'orig'.  Returns true if one was evicted. */
static bool early_drop(struct ct_table *ct, const struct ct_tuple *orig,
                       uint64_t now_ms)
{
    uint32_t b = ct_hash(ct, orig) & ct->bucket_mask;
    for (unsigned i = 0; i < CT_EVICTION_RANGE; i++) {
        uint32_t node = ct->buckets[(b + i) & ct->bucket_mask];
        while (node != CT_NIL) {
            struct ct_conn *c = &ct->conns[node_slot(node)];
            if (c->expires_ms <= now_ms) {
                ct_delete(ct, c);
                ct->counters[RT_CNT_EXPIRED]++;
                return true;
            }
            if (!(c->status & CT_ASSURED)) {
                ct_delete(ct, c);
                ct->counters[RT_CNT_EARLY_DROP]++;
                return true;
            }
            node = c->next[node_dir(node)];
        }
    }
    return false;
}

struct ct_conn *ct_alloc(struct ct_table *ct, const struct ct_tuple *orig,
                         uint64_t now_ms)
{
    if (ct->n_free == 0 && !early_drop(ct, orig, now_ms)) {
        ct->counters[RT_CNT_DROP]++;
        return NULL;
    }
    uint32_t slot = ct->free_slots[--ct->n_free];
    struct ct_conn *c = &ct->conns[slot];
    /* Slots are zeroed when freed and at start. */
    return c;
}

bool ct_insert(struct ct_table *ct, struct ct_conn *c)
{
    unsigned d;
    if (find_node(ct, &c->tuple[CT_DIR_ORIGINAL], c->created_ms, &d) ||
        find_node(ct, &c->tuple[CT_DIR_REPLY], c->created_ms, &d)) {
        ct->counters[RT_CNT_INSERT_FAILED]++;
        ct_release(ct, c);
        return false;
    }
    uint32_t slot = ct_slot(ct, c);
    for (unsigned dir = 0; dir < CT_DIRS; dir++) {
        uint32_t *head =
            &ct->buckets[ct_hash(ct, &c->tuple[dir]) & ct->bucket_mask];
        c->next[dir] = *head;
        *head = slot * 2 + dir;
    }
    c->in_use = 1;
    c->status |= CT_CONFIRMED;
    ct->count++;
    ct->counters[RT_CNT_INSERT]++;
    return true;
}

bool ct_sweep(struct ct_table *ct, uint64_t now_ms, uint32_t max_slots,
              uint32_t *visited, uint32_t *expired)
{
    bool wrapped = false;
    uint32_t i = ct->sweep_cursor;
    for (uint32_t n = 0; n < max_slots; n++) {
        struct ct_conn *c = &ct->conns[i];
        if (c->in_use && c->expires_ms <= now_ms) {
            ct_delete(ct, c);
            ct->counters[RT_CNT_EXPIRED]++;
            (*expired)++;
        }
        (*visited)++;
        if (++i == ct->capacity) {
            i = 0;
            wrapped = true;
            break;
        }
    }
    ct->sweep_cursor = i;
    return wrapped;
}

void ct_flush(struct ct_table *ct)
{
    for (uint32_t i = 0; i < ct->capacity; i++) {
        if (ct->conns[i].in_use) {
            ct_delete(ct, &ct->conns[i]);
            ct->counters[RT_CNT_DELETED]++;
        }
    }
}
