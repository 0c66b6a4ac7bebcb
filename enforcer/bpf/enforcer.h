/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * The ABI between ociguard's BPF enforcer (enforcer.bpf.c) and user space
 * (ociguard-enforcer's abi.rs mirrors every struct here, field for field; a
 * unit test there checks the sizes). Bump OG_ABI_VERSION on any change: the
 * pinned maps of an older ABI are then replaced, never reinterpreted.
 */
#ifndef OCIGUARD_ENFORCER_H
#define OCIGUARD_ENFORCER_H

#define OG_ABI_VERSION 1

/* Paths are walked through the rule DFA up to this many bytes; longer is a
 * refusal under any exec rule (it cannot be checked). Power of two. */
#define OG_PATH_MAX 512
/* The DFA's transition table: nstates * nclasses entries at most. */
#define OG_DFA_TRANS 32768
#define OG_DFA_STATES 4096
/* Arguments copied for an event (and the interactive-shell check). */
#define OG_ARGV_MAX 256
#define OG_ARG_MAX 64
#define OG_ARGS 8
#define OG_SMALL_PATH 256

/* Accept bits of a DFA state: what the path matched. */
#define OG_M_DENY 1
#define OG_M_ALLOW 2
#define OG_M_SHELL 4
#define OG_M_READER 8
/* Not a DFA bit: the path could not be read or was too long. */
#define OG_M_UNKNOWN 0x80

/* Rules; index into og_container.action. */
#define OG_RULE_EXEC_DENIED 1
#define OG_RULE_EXEC_NOT_ALLOWED 2
#define OG_RULE_SHELL 3
#define OG_RULE_REVERSE_SHELL 4
#define OG_RULE_DROP_EXEC 5
#define OG_RULE_SECRET 6
#define OG_RULE_PROC_ACCESS 7
#define OG_RULE_NO_RULESET 8
#define OG_RULES 16

/* Actions. */
#define OG_ACT_OFF 0
#define OG_ACT_AUDIT 1
#define OG_ACT_DENY 2
#define OG_ACT_KILL 3

/* Where an event came from. */
#define OG_HOOK_EXEC 1
#define OG_HOOK_MMAP 2
#define OG_HOOK_OPEN 3
#define OG_HOOK_PTRACE 4

/* og_container.flags */
#define OG_F_ALLOWLIST 1 /* allowed_exec is not empty */
#define OG_F_SECRETS 2   /* secret inodes are listed for this container */

/* Event flags. */
#define OG_EV_SOCKET_STDIO 1
#define OG_EV_INTERACTIVE 2
#define OG_EV_NO_TTY 4
#define OG_EV_UNLINKED 8
#define OG_EV_KILLED 16

/* Stats slots (per-CPU array). */
#define OG_STAT_EVENTS 0
#define OG_STAT_LOST 1
#define OG_STAT_DENIED 2
#define OG_STAT_NO_RULESET 3
#define OG_STATS 4

/* Key: the container's mount namespace inode (every task of the container,
 * exec'd ones included, shares it; a host task never has it). */
struct og_container {
	__u64 ruleset;  /* key into og_rulesets */
	__u64 start_ns; /* CLOCK_REALTIME ns: a file changed at or after it was not in the image */
	__u32 flags;
	__u32 pad;
	__u8 action[OG_RULES];
};

struct og_ruleset {
	__u16 nstates;
	__u16 nclasses;
	__u32 pad;
	__u8 classes[256];
	__u8 accept[OG_DFA_STATES];
	/* trans[state * nclasses + class] = next state; state 0 is dead, 1 the start. */
	__u16 trans[OG_DFA_TRANS];
};

struct og_dev_key {
	__u32 mntns;
	__u32 dev; /* the kernel's dev_t: major << 20 | minor */
};

struct og_inode_key {
	__u32 mntns;
	__u32 dev;
	__u64 ino;
};

struct og_event {
	__u64 ts_ns; /* CLOCK_MONOTONIC (bpf_ktime_get_ns) */
	__u32 mntns;
	__u32 pid;  /* thread id (host pid namespace) */
	__u32 tgid; /* process id (host) */
	__u32 ppid;
	__u32 uid;
	__u32 target; /* the other process's tgid (proc access) */
	__u8 rule;
	__u8 action;
	__u8 hook;
	__u8 flags;
	__u32 argv_len;
	char comm[16];
	char pcomm[16];
	char path[OG_SMALL_PATH];  /* the file as resolved */
	char asked[OG_SMALL_PATH]; /* the path the process asked for */
	char argv[OG_ARGV_MAX];    /* NUL-separated, argv_len bytes */
};

#endif
