/*
 * ct.h - the connection tracking table.
 */
#ifndef RT_CT_H
#define RT_CT_H

#include "tuple.h"

/* Status bits, numbered as Linux's enum ip_conntrack_status. */
#define CT_SEEN_REPLY (1u << 1) /* a packet in the reply direction was seen */
#define CT_ASSURED (1u << 2)    /* never early-dropped */
#define CT_CONFIRMED (1u << 3)  /* in the table (the slot is in use) */
#define CT_SRC_NAT (1u << 4)    /* the reply tuple differs in its dst */
#define CT_DST_NAT (1u << 5)    /* the reply tuple differs in its src */
#define CT_NAT_MAPPED (1u << 12) /* holds a reference on a NAT mapping */
#define CT_HOST_COUNTED (1u << 13) /* counted against its source's limit */
#define CT_TO_HOST (1u << 14) /* to the router's services: its original
                                 direction goes to the host link */
#define CT_FROM_HOST (1u << 15) /* opened from the host link: its replies go
                                   there (they may be for a router address) */

#define CT_NIL UINT32_MAX /* end of a hash chain / of the free list */

/* 'created' counts in units of 2^CT_CREATED_SHIFT ms (64 ms): 32 bits last
 * 8.7 years, and ages are differences, so wrapping is harmless. */
#define CT_CREATED_SHIFT 6

/* The longest timeout: deadlines are 32-bit milliseconds compared as signed
 * differences, so they must stay less than 2^31 ms (24.8 days) ahead. */
#define CT_MAX_TIMEOUT_MS (20ull * 86400 * 1000)

/*
 * One tracked connection, exactly two cache lines.  Both tuples are in the
 * hash table; a lookup hit on tuple[d] means the packet travels in
 * direction d.  NAT is nothing but a reply tuple that is not the plain
 * inverse of the original one.
 */
struct ct_conn {
    struct ct_tuple tuple[CT_DIRS]; /* original and reply tuples */
    uint32_t next[CT_DIRS];         /* chain links of tuple[d] (node ids);
                                       next[0] links the free list when the
                                       slot is free */
    uint32_t expires;               /* deadline, ms (low 32 bits of now_ms) */
    uint32_t created;               /* first packet, now_ms >> 6 */
    uint64_t bytes[CT_DIRS];        /* IP bytes seen per direction */
    uint32_t packets_lo[CT_DIRS];   /* packets seen per direction: low 32 */
    uint16_t packets_hi[CT_DIRS];   /* ... and high 16 bits (48 in all) */
    uint16_t status;                /* CT_* status bits */
    uint8_t state;                  /* L4 state: enum rt_tcp_state for TCP */
    uint8_t l4_flags;               /* private to the L4 tracker */
};
static_assert(sizeof(struct ct_conn) == 128, "ct_conn must be two cache lines");

/* struct ct_tcp_win.flags, per direction (Linux's IP_CT_TCP_FLAG_*). */
#define CT_TCPF_WINDOW_SCALE 0x01 /* sent the window scale option */
#define CT_TCPF_SACK_PERM 0x02    /* sent SACK permitted */
#define CT_TCPF_CLOSE_INIT 0x04   /* (unused, Linux's numbering) */
#define CT_TCPF_BE_LIBERAL 0x08   /* out-of-window segments pass */
#define CT_TCPF_DATA_UNACK 0x10   /* sent data not acknowledged yet */
#define CT_TCPF_MAXACK_SET 0x20   /* 'maxack' holds an acknowledgement */

/*
 * The sequence-window state of a TCP connection (Linux's ip_ct_tcp_state,
 * van Rooij's "Real Stateful TCP Packet Filtering"), per direction: the
 * highest sequence number sent plus one (end), the highest the receiver
 * allowed (maxend), the largest window seen (maxwin), the highest
 * acknowledgement sent (maxack) and the window scale.
 * Kept in an array parallel to the connections, one 40-byte entry per slot:
 * only TCP touches it, so the two cache lines of struct ct_conn stay what
 * every protocol reads.  'last_sig' identifies the last acknowledgement so
 * that identical ones (retransmissions) can be counted.
 */
struct ct_tcp_win {
    uint32_t end[CT_DIRS];
    uint32_t maxend[CT_DIRS];
    uint32_t maxwin[CT_DIRS];
    uint32_t maxack[CT_DIRS]; /* highest acknowledgement sent (RFC 5961) */
    uint32_t last_sig;       /* hash of seq, ack, end and window */
    uint8_t scale[CT_DIRS];  /* window scale shift, 0..14 */
    uint8_t flags[CT_DIRS];  /* CT_TCPF_* */
};
static_assert(sizeof(struct ct_tcp_win) == 40, "ct_tcp_win is 40 bytes");

/*
 * The table: a preallocated array of connections and a chained hash index
 * over node ids ('slot' * 2 + direction).  Sized once at start; nothing is
 * allocated per packet.  Slots are handed out from the bottom up
 * ('high_water'), then recycled through a free list linked by next[0], so
 * memory is touched only as the table fills.
 */
struct ct_table {
    struct ct_conn *conns;   /* 'capacity' slots, 128-byte aligned */
    struct ct_tcp_win *tcpw; /* 'capacity' TCP window states, by slot */
    uint32_t *buckets;       /* chain heads, 'bucket_mask' + 1 of them */
    uint32_t free_head;      /* first recycled free slot, CT_NIL if none */
    uint32_t high_water;     /* slots at and above it were never used */
    uint32_t capacity;       /* maximum number of connections */
    uint32_t count;          /* connections in the table */
    uint32_t bucket_mask;    /* number of buckets - 1 (a power of two) */
    uint32_t sweep_cursor;   /* next slot the sweep looks at */
    uint64_t seed;           /* hash key */
    uint64_t keys[6];        /* per-word hash keys derived from 'seed' */
    uint64_t *counters;      /* the data plane's RT_CNT_* array */
    void (*on_delete)(void *ctx, const struct ct_conn *c); /* called for
                                connections with CT_NAT_MAPPED or
                                CT_HOST_COUNTED as they go, and for all
                                with 'notify_all' */
    void *on_delete_ctx;     /* its first argument */
    bool notify_all;         /* call on_delete for every connection */
    size_t conns_bytes;      /* size of the 'conns' mapping */
    size_t buckets_bytes;    /* size of the 'buckets' mapping */
    size_t tcpw_bytes;       /* size of the 'tcpw' mapping */
};

/* Number of buckets looked at for an entry to evict when the table is full,
 * as Linux's NF_CT_EVICTION_RANGE. */
#define CT_EVICTION_RANGE 8

int ct_init(struct ct_table *ct, uint32_t capacity, uint64_t seed,
            uint64_t *counters);
void ct_destroy(struct ct_table *ct);

/* Keyed hash of a tuple.  Changes to struct ct_tuple must be mirrored. */
uint32_t ct_hash(const struct ct_table *ct, const struct ct_tuple *t);
/* The same hash under other keys, and the keys derived from a seed. */
uint32_t ct_hash_with(const uint64_t k[6], const struct ct_tuple *t);
void ct_hash_keys(uint64_t seed, uint64_t keys[6]);

/* Prefetches the bucket of 'hash', and then the first connection in it
 * (with its TCP window state for a TCP packet). */
void ct_prefetch_bucket(const struct ct_table *ct, uint32_t hash);
void ct_prefetch_head(const struct ct_table *ct, uint32_t hash, bool tcp);

/* Finds the connection holding 'key' (whose hash is 'hash'); sets '*dir'.
 * Expired entries found on the way are removed and not returned. */
struct ct_conn *ct_find(struct ct_table *ct, const struct ct_tuple *key,
                        uint32_t hash, uint64_t now_ms, enum ct_dir *dir);

/* True if 'key' is a tuple of a live connection. */
bool ct_tuple_in_use(struct ct_table *ct, const struct ct_tuple *key,
                     uint64_t now_ms);

/*
 * Takes a free slot for a new connection whose original tuple hashes to
 * 'hash'.  When the table is full, evicts one expired or non-ASSURED entry
 * from the buckets near it (counted as early_drop); returns NULL if there is
 * none (counted as drop).  The slot is zeroed and not yet in the index.
 */
struct ct_conn *ct_alloc(struct ct_table *ct, uint32_t hash, uint64_t now_ms);

/*
 * Puts both tuples of 'c' in the index; 'orig_hash' is the hash of its
 * original tuple.  The caller has just looked the original tuple up and not
 * found it; with 'reply_known_free' it has also checked the reply tuple.
 * Otherwise the reply tuple is checked here, and if it is taken the slot is
 * freed and false returned (counted as insert_failed).
 */
bool ct_insert(struct ct_table *ct, struct ct_conn *c, uint32_t orig_hash,
               bool reply_known_free, uint64_t now_ms);

/* Removes an inserted connection. */
void ct_delete(struct ct_table *ct, struct ct_conn *c);

/* Visits up to 'max_slots' slots from the saved cursor and removes the
 * expired connections.  Adds to '*visited' and '*expired'; returns true when
 * the cursor wrapped around to slot 0 (a full pass ended). */
bool ct_sweep(struct ct_table *ct, uint64_t now_ms, uint32_t max_slots,
              uint32_t *visited, uint32_t *expired);

/* Removes every connection. */
void ct_flush(struct ct_table *ct);

static inline uint32_t ct_slot(const struct ct_table *ct,
                               const struct ct_conn *c)
{
    return (uint32_t)(c - ct->conns);
}

/* The TCP window state of connection 'c'. */
static inline struct ct_tcp_win *ct_tcp_win(const struct ct_table *ct,
                                            const struct ct_conn *c)
{
    return &ct->tcpw[c - ct->conns];
}

static inline bool ct_live(const struct ct_conn *c)
{
    return (c->status & CT_CONFIRMED) != 0;
}

/* True when 'c' has expired at 'now_ms' (wrap-safe). */
static inline bool ct_expired(const struct ct_conn *c, uint64_t now_ms)
{
    return (int32_t)(c->expires - (uint32_t)now_ms) <= 0;
}

/* Sets the deadline 'timeout_ms' after 'now_ms'. */
static inline void ct_set_timeout(struct ct_conn *c, uint64_t now_ms,
                                  uint64_t timeout_ms)
{
    if (timeout_ms > CT_MAX_TIMEOUT_MS)
        timeout_ms = CT_MAX_TIMEOUT_MS;
    c->expires = (uint32_t)(now_ms + timeout_ms);
}

/* Milliseconds left before 'c' expires (0 if it has). */
static inline uint64_t ct_time_left(const struct ct_conn *c, uint64_t now_ms)
{
    int32_t d = (int32_t)(c->expires - (uint32_t)now_ms);
    return d > 0 ? (uint64_t)d : 0;
}

/* Milliseconds since the first packet, at a 64 ms resolution. */
static inline uint64_t ct_age(const struct ct_conn *c, uint64_t now_ms)
{
    uint32_t d = (uint32_t)(now_ms >> CT_CREATED_SHIFT) - c->created;
    return (uint64_t)d << CT_CREATED_SHIFT;
}

static inline void ct_count_packet(struct ct_conn *c, enum ct_dir d,
                                   uint32_t segs, uint32_t bytes)
{
    uint64_t p = ((uint64_t)c->packets_hi[d] << 32) | c->packets_lo[d];
    p += segs;
    c->packets_lo[d] = (uint32_t)p;
    c->packets_hi[d] = (uint16_t)(p >> 32);
    c->bytes[d] += bytes;
}

static inline uint64_t ct_packets(const struct ct_conn *c, enum ct_dir d)
{
    return ((uint64_t)c->packets_hi[d] << 32) | c->packets_lo[d];
}

#endif /* RT_CT_H */
