/*
 * ct.c - connection tracking table: index, insertion, eviction, expiry.
 *
 * Theory of operation.  Every connection lives in one 128-byte slot of a
 * preallocated array and is reachable through two hash chains, one per
 * direction, so a packet of either direction finds it with one lookup (as in
 * Linux, where each nf_conn has two tuplehash entries).  The chains hold node
 * ids, slot * 2 + direction, which keeps a link at four bytes.  The bucket
 * count is the smallest power of two at or above four times the capacity,
 * so at capacity a chain holds half a node on average and 79 % of lookups
 * find their connection at the head of the chain, the one the batch loop
 * prefetched (with one bucket per node it was 63 %, and every other lookup
 * paid a cache miss nothing could hide).  A full table costs 128 bytes per
 * connection plus 16 bytes of index (and 40 of TCP window state).
 *
 * The array and the index are anonymous mappings, asked to use huge pages
 * when large: a lookup in a big table is a couple of cache misses, and TLB
 * misses on top of them would double its cost.  Pages are touched only as
 * slots are first used.
 *
 * Expiry is a deadline written on every packet.  Nothing is timed here:
 * lookups drop expired entries they meet (lazy reaping), and ct_sweep()
 * walks a bounded slice of slots per call, so the control plane decides the
 * pace.  When the table is full, ct_alloc() looks at a few buckets near the
 * new flow for an entry that is expired or not ASSURED and evicts it, exactly
 * one; an ASSURED entry is never evicted.
 */
#include <string.h>
#include <sys/mman.h>
#include "ct.h"

#define HUGE_PAGE (2u << 20)

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* 64x64 -> 128-bit multiply, folded: the core step of wyhash. */
static inline uint64_t mum(uint64_t a, uint64_t b)
{
    unsigned __int128 r = (unsigned __int128)a * b;
    return (uint64_t)r ^ (uint64_t)(r >> 64);
}

void ct_hash_keys(uint64_t seed, uint64_t keys[6])
{
    uint64_t s = seed;
    for (int i = 0; i < 6; i++)
        keys[i] = splitmix64(&s) | 1;
}

uint32_t ct_hash(const struct ct_table *ct, const struct ct_tuple *t)
{
    return ct_hash_with(ct->keys, t);
}

uint32_t ct_hash_with(const uint64_t k[6], const struct ct_tuple *t)
{
    uint64_t w[5];
    memcpy(w, t, sizeof w);
    uint64_t h = mum(w[0] ^ k[0], w[1] ^ k[1]) ^ mum(w[2] ^ k[2], w[3] ^ k[3]) ^
                 mum(w[4] ^ k[4], k[5]);
    return (uint32_t)(h ^ (h >> 32));
}

static inline bool tuple_eq(const struct ct_tuple *a, const struct ct_tuple *b)
{
    uint64_t x[5], y[5];
    memcpy(x, a, sizeof x);
    memcpy(y, b, sizeof y);
    return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3]) |
            (x[4] ^ y[4])) == 0;
}

static inline uint32_t node_slot(uint32_t node) { return node >> 1; }
static inline unsigned node_dir(uint32_t node) { return node & 1u; }

static void *map(size_t bytes)
{
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    if (bytes >= HUGE_PAGE)
        (void)madvise(p, bytes, MADV_HUGEPAGE); /* a hint; fine if refused */
    return p;
}

int ct_init(struct ct_table *ct, uint32_t capacity, uint64_t seed,
            uint64_t *counters)
{
    memset(ct, 0, sizeof *ct);
    if (capacity == 0 || capacity > (1u << 29)) /* node ids and 4x buckets fit */
        return -1;
    /* Four buckets per connection, rounded up to a power of two: with two
     * nodes per connection a chain holds half a node on average at
     * capacity (see the top of the file). */
    uint32_t nb = 2;
    while (nb < 4 * (uint64_t)capacity)
        nb <<= 1;
    ct->conns_bytes = (size_t)capacity * sizeof *ct->conns;
    ct->buckets_bytes = (size_t)nb * sizeof *ct->buckets;
    ct->tcpw_bytes = (size_t)capacity * sizeof *ct->tcpw;
    ct->conns = map(ct->conns_bytes);
    ct->buckets = map(ct->buckets_bytes);
    ct->tcpw = map(ct->tcpw_bytes);
    if (!ct->conns || !ct->buckets || !ct->tcpw) {
        ct_destroy(ct);
        return -1;
    }
    memset(ct->buckets, 0xff, ct->buckets_bytes);
    ct->free_head = CT_NIL;
    ct->capacity = capacity;
    ct->bucket_mask = nb - 1;
    ct->seed = seed;
    ct_hash_keys(seed, ct->keys);
    ct->counters = counters;
    return 0;
}

void ct_destroy(struct ct_table *ct)
{
    if (ct->conns)
        munmap(ct->conns, ct->conns_bytes);
    if (ct->buckets)
        munmap(ct->buckets, ct->buckets_bytes);
    if (ct->tcpw)
        munmap(ct->tcpw, ct->tcpw_bytes);
    memset(ct, 0, sizeof *ct);
}

void ct_prefetch_bucket(const struct ct_table *ct, uint32_t hash)
{
    __builtin_prefetch(&ct->buckets[hash & ct->bucket_mask]);
}

void ct_prefetch_head(const struct ct_table *ct, uint32_t hash, bool tcp)
{
    uint32_t node = ct->buckets[hash & ct->bucket_mask];
    if (node != CT_NIL) {
        /* Both lines: the tuples, and the state a hit updates; for TCP
         * also the window state the tracker reads. */
        const struct ct_conn *c = &ct->conns[node_slot(node)];
        __builtin_prefetch(c);
        __builtin_prefetch((const char *)c + 64);
        if (tcp)
            __builtin_prefetch(&ct->tcpw[node_slot(node)]);
    }
}

static void unlink_node(struct ct_table *ct, struct ct_conn *c, unsigned d,
                        uint32_t hash)
{
    uint32_t node = ct_slot(ct, c) * 2 + d;
    uint32_t *link = &ct->buckets[hash & ct->bucket_mask];
    /* Chains are short (half a node on average at capacity). */
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
    /* The TCP window entry is left as it is: a TCP connection writes all
     * of it when it is created, and nothing else reads it. */
    memset(c, 0, sizeof *c);
    c->next[0] = ct->free_head;
    ct->free_head = ct_slot(ct, c);
}

static void delete_hashed(struct ct_table *ct, struct ct_conn *c,
                          const uint32_t hash[CT_DIRS])
{
    if (((c->status & (CT_NAT_MAPPED | CT_HOST_COUNTED)) || ct->notify_all) &&
        ct->on_delete)
        ct->on_delete(ct->on_delete_ctx, c);
    unlink_node(ct, c, CT_DIR_ORIGINAL, hash[CT_DIR_ORIGINAL]);
    unlink_node(ct, c, CT_DIR_REPLY, hash[CT_DIR_REPLY]);
    free_slot(ct, c);
    ct->count--;
}

void ct_delete(struct ct_table *ct, struct ct_conn *c)
{
    uint32_t hash[CT_DIRS] = {ct_hash(ct, &c->tuple[0]), ct_hash(ct, &c->tuple[1])};
    delete_hashed(ct, c, hash);
}

static struct ct_conn *find_node(struct ct_table *ct,
                                 const struct ct_tuple *key, uint32_t hash,
                                 uint64_t now_ms, unsigned *dir)
{
    uint32_t node = ct->buckets[hash & ct->bucket_mask];
    while (node != CT_NIL) {
        struct ct_conn *c = &ct->conns[node_slot(node)];
        unsigned d = node_dir(node);
        if (tuple_eq(&c->tuple[d], key)) {
            if (ct_expired(c, now_ms)) {
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
                        uint32_t hash, uint64_t now_ms, enum ct_dir *dir)
{
    unsigned d = 0;
    struct ct_conn *c = find_node(ct, key, hash, now_ms, &d);
    *dir = (enum ct_dir)d;
    return c;
}

bool ct_tuple_in_use(struct ct_table *ct, const struct ct_tuple *key,
                     uint64_t now_ms)
{
    unsigned d;
    return find_node(ct, key, ct_hash(ct, key), now_ms, &d) != NULL;
}

/* Evicts one expired or non-ASSURED connection found in the buckets at and
 * after 'hash's.  Returns true if one was evicted. */
static bool early_drop(struct ct_table *ct, uint32_t hash, uint64_t now_ms)
{
    uint32_t b = hash & ct->bucket_mask;
    for (unsigned i = 0; i < CT_EVICTION_RANGE; i++) {
        uint32_t node = ct->buckets[(b + i) & ct->bucket_mask];
        while (node != CT_NIL) {
            struct ct_conn *c = &ct->conns[node_slot(node)];
            if (ct_expired(c, now_ms)) {
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

struct ct_conn *ct_alloc(struct ct_table *ct, uint32_t hash, uint64_t now_ms)
{
    if (ct->count >= ct->capacity && !early_drop(ct, hash, now_ms)) {
        ct->counters[RT_CNT_DROP]++;
        return NULL;
    }
    struct ct_conn *c;
    if (ct->free_head != CT_NIL) {
        c = &ct->conns[ct->free_head];
        ct->free_head = c->next[0];
        c->next[0] = 0;
    } else {
        c = &ct->conns[ct->high_water++]; /* untouched, zero */
    }
    return c;
}

bool ct_insert(struct ct_table *ct, struct ct_conn *c, uint32_t orig_hash,
               bool reply_known_free, uint64_t now_ms)
{
    uint32_t reply_hash = ct_hash(ct, &c->tuple[CT_DIR_REPLY]);
    unsigned d;
    if (!reply_known_free &&
        find_node(ct, &c->tuple[CT_DIR_REPLY], reply_hash, now_ms, &d)) {
        ct->counters[RT_CNT_INSERT_FAILED]++;
        free_slot(ct, c);
        return false;
    }
    uint32_t slot = ct_slot(ct, c);
    uint32_t hashes[CT_DIRS] = {orig_hash, reply_hash};
    for (unsigned dir = 0; dir < CT_DIRS; dir++) {
        uint32_t *head = &ct->buckets[hashes[dir] & ct->bucket_mask];
        c->next[dir] = *head;
        *head = slot * 2 + dir;
    }
    c->status |= CT_CONFIRMED;
    ct->count++;
    ct->counters[RT_CNT_INSERT]++;
    return true;
}

#define SWEEP_GROUP 16

bool ct_sweep(struct ct_table *ct, uint64_t now_ms, uint32_t max_slots,
              uint32_t *visited, uint32_t *expired)
{
    /* Expired connections are gathered a group at a time and their buckets
     * prefetched before they are unlinked: deletions are bucket misses, and
     * this lets a group's misses overlap. */
    struct ct_conn *group[SWEEP_GROUP];
    uint32_t hash[SWEEP_GROUP][CT_DIRS];
    unsigned n_group = 0;
    bool wrapped = false;
    uint32_t i = ct->sweep_cursor;
    for (uint32_t n = 0; n < max_slots; n++) {
        if (i >= ct->high_water) { /* nothing above was ever used */
            i = 0;
            wrapped = true;
            break;
        }
        struct ct_conn *c = &ct->conns[i];
        if (ct_live(c) && ct_expired(c, now_ms)) {
            for (unsigned d = 0; d < CT_DIRS; d++) {
                hash[n_group][d] = ct_hash(ct, &c->tuple[d]);
                ct_prefetch_bucket(ct, hash[n_group][d]);
            }
            group[n_group++] = c;
        }
        (*visited)++;
        i++;
        if (n_group == SWEEP_GROUP || n + 1 == max_slots) {
            for (unsigned g = 0; g < n_group; g++)
                delete_hashed(ct, group[g], hash[g]);
            ct->counters[RT_CNT_EXPIRED] += n_group;
            *expired += n_group;
            n_group = 0;
        }
    }
    for (unsigned g = 0; g < n_group; g++)
        delete_hashed(ct, group[g], hash[g]);
    ct->counters[RT_CNT_EXPIRED] += n_group;
    *expired += n_group;
    ct->sweep_cursor = i;
    return wrapped;
}

void ct_flush(struct ct_table *ct)
{
    for (uint32_t i = 0; i < ct->high_water; i++) {
        if (ct_live(&ct->conns[i])) {
            ct_delete(ct, &ct->conns[i]);
            ct->counters[RT_CNT_DELETED]++;
        }
    }
}
