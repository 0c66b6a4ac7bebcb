/* SPDX-License-Identifier: Apache-2.0 OR GPL-2.0-only */
/*
 * ociguard's in-kernel enforcer: the [behavior] rules that can be decided from what the
 * kernel knows at the moment an operation happens, held without any user-space round trip.
 *
 * This kernel refuses trampoline programs (lsm/, fentry/: EPERM) although the BPF LSM is
 * listed, so the enforcer is built on BTF tracepoints, which load wherever BPF tracing does:
 *   - sched_process_exec: the exec has happened but the new program has not run one
 *     instruction; a match is killed here (SIGKILL is taken before the return to user space).
 *   - sys_exit of open/openat/openat2: the open of another process's /proc/PID/environ or
 *     /proc/PID/mem has returned an fd, and the process is killed before it can read from it.
 *   - sys_enter of ptrace(ATTACH/SEIZE), process_vm_readv/writev on another process.
 * There is no way to make an operation fail with EPERM from a tracepoint: every enforced
 * match is a kill; `deny` (EPERM) is the fanotify guard's, which answers before the exec.
 *
 * A container is known by its mount namespace (the key ociguardd writes, from the
 * createRuntime hook, before the container's process runs); a process in no guarded
 * namespace costs one hash lookup (open) or a compare (other syscalls, exec) and nothing else.
 *
 * Keep the layouts below (struct cfg, name_key, event, the R_* and N_* bits) in step with
 * monitor/src/bpf.rs.
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

#ifndef __TARGET_ARCH_x86
#error "the enforcer's syscall numbers and registers are x86_64's"
#endif

char LICENSE[] SEC("license") = "GPL";

#define PATH_LEN 256
#define ARGV_LEN 256
#define NAME_LEN 32

/* cfg.rules */
#define R_SHELL (1u << 0)
#define R_REVERSE (1u << 1)
#define R_DROP (1u << 2)
#define R_ENVIRON (1u << 3)
#define R_LOADER (1u << 4)
/* Not a rule: report every exec (learning a profile, or comparing with one). An event with
 * this bit is an observation, never a kill. */
#define R_OBSERVE (1u << 5)

/* og_names values */
#define N_SHELL 1u
#define N_LOADER 2u
#define N_MULTI 4u /* a multi-call binary: argv[0] names the program */

#define HOOK_EXEC 1
#define HOOK_OPEN 2
#define HOOK_PTRACE 3
#define HOOK_VM 4

#define EV_SOCKET_STDIO 1u
#define EV_NOT_IN_IMAGE 2u
#define EV_INTERACTIVE 4u

#define STAT_LOST 0
#define STAT_KILLED 1
#define STAT_AUDITED 2
#define STAT_OBSERVED 3
#define STAT_N 4

#define NR_open 2
#define NR_ptrace 101
#define NR_openat 257
#define NR_process_vm_readv 310
#define NR_process_vm_writev 311
#define NR_openat2 437

#define PTRACE_ATTACH 16
#define PTRACE_SEIZE 0x4206

#define PROC_SUPER_MAGIC 0x9fa0
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define S_IFCHR 0020000
#define MINORBITS 20

struct cfg {
	__u64 start_ns; /* CLOCK_REALTIME: a file changed at or after this is not the image's */
	__u64 pidns_dev; /* the container's pid namespace, for "is this pid the caller?" */
	__u64 pidns_ino;
	__u32 rules;
	__u32 audit; /* report, never kill */
};

struct name_key {
	__u64 mntns;
	char name[NAME_LEN];
};

struct event {
	__u64 mntns;
	__u64 ktime_ns;
	__u32 pid; /* thread group id, as the host sees it */
	__u32 ppid;
	__u32 target; /* the other process (environ, ptrace): host pid for open, else the caller's */
	__u32 rule; /* one R_* bit */
	__u32 audit;
	__u32 hook;
	__u32 argv_len;
	__u32 flags;
	char comm[16];
	char pcomm[16];
	char path[PATH_LEN];
	char argv[ARGV_LEN];
	char file[NAME_LEN]; /* exec: the name of the file it resolved to */
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u64);
	__type(value, struct cfg);
} og_containers SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 262144);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, struct name_key);
	__type(value, __u32);
} og_names SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} og_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_N);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
	__type(key, __u32);
	__type(value, __u64);
} og_stats SEC(".maps");

/* One event under construction per CPU (too large for the 512-byte stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event);
} og_scratch SEC(".maps");

static __always_inline void stat_add(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&og_stats, &which);
	if (v)
		*v += 1;
}

static __always_inline __u64 mntns_of(struct task_struct *t)
{
	return BPF_CORE_READ(t, nsproxy, mnt_ns, ns.inum);
}

/* Scans of the event's strings run as bpf_loop() callbacks: the verifier checks a callback
 * once, where a plain loop over 256 bytes is explored iteration by iteration. */
struct scan {
	const char *buf;
	__u32 off;
	__u32 start; /* after the last '/' */
	__u32 end; /* the NUL */
	__u32 word, pos, dash, has_i, found;
};

static long last_slash_cb(__u64 i, struct scan *x)
{
	__u32 at = x->off + (__u32)i;
	if (at >= PATH_LEN)
		return 1;
	char ch = x->buf[at & (PATH_LEN - 1)];
	if (!ch) {
		x->end = at;
		return 1;
	}
	if (ch == '/')
		x->start = at + 1;
	return 0;
}

/* The last path component of buf[off..] (NUL-terminated within PATH_LEN bytes) into dst,
 * which the caller zeroed; returns the offset of the NUL. Longer names are cut (a cut name
 * matches no rule's name). */
static __always_inline __u32 base_into(char *dst, const char *buf, __u32 off)
{
	struct scan x = {.buf = buf, .off = off, .start = off, .end = PATH_LEN};
	bpf_loop(PATH_LEN, last_slash_cb, &x, 0);
	for (__u32 j = 0; j < NAME_LEN - 1; j++) {
		__u32 at = x.start + j;
		if (at >= PATH_LEN)
			break;
		char ch = buf[at & (PATH_LEN - 1)];
		dst[j] = ch;
		if (!ch)
			break;
	}
	return x.end;
}

static __always_inline __u32 name_bits(__u64 ns, struct name_key *k)
{
	k->mntns = ns;
	__u32 *v = bpf_map_lookup_elem(&og_names, k);
	return v ? *v : 0;
}

static __always_inline struct file *fd_file(struct task_struct *t, __u32 fd)
{
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	if (!fdt || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

static __always_inline __u32 fd_mode(struct task_struct *t, __u32 fd, __u32 *major)
{
	struct file *f = fd_file(t, fd);
	if (!f)
		return 0;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	if (major)
		*major = BPF_CORE_READ(ino, i_rdev) >> MINORBITS;
	return BPF_CORE_READ(ino, i_mode);
}

static __always_inline bool is_tty_major(__u32 major)
{
	/* tty, console/ptmx, and the Unix98 pty slaves */
	return major == 4 || major == 5 || (major >= 136 && major <= 143);
}

static __always_inline __s64 ctime_ns(struct inode *ino)
{
	if (bpf_core_field_exists(struct inode___split, i_ctime_sec)) {
		struct inode___split *i = (void *)ino;
		return BPF_CORE_READ(i, i_ctime_sec) * 1000000000LL + BPF_CORE_READ(i, i_ctime_nsec);
	}
	if (bpf_core_field_exists(struct inode___ts, __i_ctime)) {
		struct inode___ts *i = (void *)ino;
		return BPF_CORE_READ(i, __i_ctime.tv_sec) * 1000000000LL +
		       BPF_CORE_READ(i, __i_ctime.tv_nsec);
	}
	struct inode___old *i = (void *)ino;
	return BPF_CORE_READ(i, i_ctime.tv_sec) * 1000000000LL + BPF_CORE_READ(i, i_ctime.tv_nsec);
}

/* argv of the current process (its new image's, at exec), NUL-separated, bounded. */
static __always_inline void read_argv(struct task_struct *t, struct event *e)
{
	struct mm_struct *mm = BPF_CORE_READ(t, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	__u32 n = 0;
	if (end > start)
		n = end - start > ARGV_LEN - 1 ? ARGV_LEN - 1 : end - start;
	e->argv[0] = 0;
	if (n && bpf_probe_read_user(e->argv, n & (ARGV_LEN - 1), (void *)start))
		n = 0;
	e->argv[n & (ARGV_LEN - 1)] = 0;
	e->argv_len = n;
}

static long interactive_cb(__u64 i, struct scan *x)
{
	if (i >= x->end)
		return 1;
	char ch = x->buf[i & (ARGV_LEN - 1)];
	if (!ch) {
		if (x->word > 0 && x->dash && x->has_i && x->pos <= 8) {
			x->found = 1;
			return 1;
		}
		x->word++;
		x->pos = 0;
		x->dash = 0;
		x->has_i = 0;
		return 0;
	}
	if (x->pos == 0)
		x->dash = ch == '-';
	else if (x->pos == 1 && ch == '-')
		x->dash = 0;
	else if (ch == 'i')
		x->has_i = 1;
	x->pos++;
	return 0;
}

/* A word after argv[0] like `-i` or `-il` (at most 8 bytes, not `--...`): an interactive shell. */
static __always_inline bool interactive(struct event *e)
{
	struct scan x = {.buf = e->argv, .end = e->argv_len};
	bpf_loop(ARGV_LEN, interactive_cb, &x, 0);
	return x.found;
}

static __always_inline void report(struct cfg *c, struct event *e, struct task_struct *t, __u64 ns,
				   __u32 rule, __u32 hook)
{
	__u32 audit = c->audit || rule == R_OBSERVE;
	if (!audit)
		bpf_send_signal(9);
	stat_add(rule == R_OBSERVE ? STAT_OBSERVED : audit ? STAT_AUDITED : STAT_KILLED);
	struct task_struct *parent = BPF_CORE_READ(t, real_parent);
	e->mntns = ns;
	e->ktime_ns = bpf_ktime_get_ns();
	e->pid = BPF_CORE_READ(t, tgid);
	e->ppid = BPF_CORE_READ(parent, tgid);
	e->rule = rule;
	e->audit = audit;
	e->hook = hook;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	BPF_CORE_READ_STR_INTO(&e->pcomm, parent, comm);
	if (bpf_ringbuf_output(&og_events, e, sizeof(*e), 0))
		stat_add(STAT_LOST);
}

/* The current task's container rules when they include `rule`; its mount namespace in *ns. */
static __always_inline struct cfg *guarded(struct task_struct *t, __u32 rule, __u64 *ns)
{
	*ns = mntns_of(t);
	struct cfg *c = bpf_map_lookup_elem(&og_containers, ns);
	return c && (c->rules & rule) ? c : 0;
}

static __always_inline struct event *scratch(void)
{
	__u32 zero = 0;
	struct event *e = bpf_map_lookup_elem(&og_scratch, &zero);
	if (e) {
		e->flags = 0;
		e->target = 0;
		e->argv_len = 0;
		e->file[0] = 0;
	}
	return e;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(og_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	__u64 ns = mntns_of(p);
	struct cfg *c = bpf_map_lookup_elem(&og_containers, &ns);
	if (!c)
		return 0;
	struct event *e = scratch();
	if (!e)
		return 0;
	if (bpf_probe_read_kernel_str(e->path, PATH_LEN, BPF_CORE_READ(bprm, filename)) < 0)
		e->path[0] = 0;
	read_argv(p, e);

	/* What runs: by the name asked for, by the file it resolved to, and for a multi-call
	 * binary by its argv[0] (or argv[1] when argv[0] names the binary itself). */
	struct name_key k = {};
	base_into(k.name, e->path, 0);
	__u32 bits = name_bits(ns, &k);
	struct file *f = BPF_CORE_READ(bprm, file);
	__builtin_memset(k.name, 0, NAME_LEN);
	bpf_probe_read_kernel_str(k.name, NAME_LEN, BPF_CORE_READ(f, f_path.dentry, d_name.name));
	__builtin_memcpy(e->file, k.name, NAME_LEN);
	bits |= name_bits(ns, &k);
	if (bits & N_MULTI) {
		__builtin_memset(k.name, 0, NAME_LEN);
		__u32 end0 = base_into(k.name, e->argv, 0);
		__u32 applet = name_bits(ns, &k);
		if (applet & N_MULTI) {
			/* `busybox sh`: argv[1], after argv[0]'s NUL */
			__u32 off = end0 + 1;
			__builtin_memset(k.name, 0, NAME_LEN);
			if (off < e->argv_len)
				base_into(k.name, e->argv, off);
			applet = name_bits(ns, &k);
		}
		bits |= applet;
	}

	bool shell = bits & N_SHELL;
	__u32 rule = 0;
	if ((c->rules & R_REVERSE) && shell) {
		__u32 major = 0;
		__u32 m0 = fd_mode(p, 0, &major);
		__u32 m1 = fd_mode(p, 1, 0);
		__u32 m2 = fd_mode(p, 2, 0);
		bool sock = (m0 & S_IFMT) == S_IFSOCK || (m1 & S_IFMT) == S_IFSOCK ||
			    (m2 & S_IFMT) == S_IFSOCK;
		bool tty = (m0 & S_IFMT) == S_IFCHR && is_tty_major(major);
		if (sock)
			e->flags |= EV_SOCKET_STDIO;
		if (interactive(e))
			e->flags |= EV_INTERACTIVE;
		if (sock || ((e->flags & EV_INTERACTIVE) && !tty))
			rule = R_REVERSE;
	}
	if (!rule && (c->rules & (R_DROP | R_OBSERVE))) {
		struct inode *ino = BPF_CORE_READ(f, f_inode);
		if (BPF_CORE_READ(ino, __i_nlink) == 0 || ctime_ns(ino) >= (__s64)c->start_ns) {
			e->flags |= EV_NOT_IN_IMAGE;
			if (c->rules & R_DROP)
				rule = R_DROP;
		}
	}
	if (!rule && (c->rules & R_SHELL) && shell)
		rule = R_SHELL;
	if (!rule && (c->rules & R_LOADER) && (bits & N_LOADER))
		rule = R_LOADER;
	if (rule)
		report(c, e, p, ns, rule, HOOK_EXEC);
	else if (c->rules & R_OBSERVE)
		report(c, e, p, ns, R_OBSERVE, HOOK_EXEC);
	return 0;
}

SEC("tp_btf/sys_exit")
int BPF_PROG(og_sys_exit, struct pt_regs *regs, long ret)
{
	if (ret < 0)
		return 0;
	long nr = regs->orig_ax;
	if (nr != NR_openat && nr != NR_open && nr != NR_openat2)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 ns;
	struct cfg *c = guarded(t, R_ENVIRON, &ns);
	if (!c)
		return 0;
	struct file *f = fd_file(t, (__u32)ret);
	if (!f)
		return 0;
	struct inode *ino = BPF_CORE_READ(f, f_inode);
	if (BPF_CORE_READ(ino, i_sb, s_magic) != PROC_SUPER_MAGIC)
		return 0;
	char name[8] = {};
	bpf_probe_read_kernel_str(name, sizeof(name), BPF_CORE_READ(f, f_path.dentry, d_name.name));
	bool environ = name[0] == 'e' && name[1] == 'n' && name[2] == 'v' && name[3] == 'i' &&
		       name[4] == 'r' && name[5] == 'o' && name[6] == 'n' && name[7] == 0;
	bool mem = name[0] == 'm' && name[1] == 'e' && name[2] == 'm' && name[3] == 0;
	if (!environ && !mem)
		return 0;
	/* procfs keeps the task's struct pid in the inode's container, struct proc_inode */
	struct proc_inode *pi =
		(void *)((char *)ino - bpf_core_field_offset(struct proc_inode, vfs_inode));
	int owner = BPF_CORE_READ(pi, pid, numbers[0].nr);
	if (owner == BPF_CORE_READ(t, tgid) || owner == BPF_CORE_READ(t, pid))
		return 0;
	struct event *e = scratch();
	if (!e)
		return 0;
	e->target = owner;
	__builtin_memcpy(e->path, name, sizeof(name));
	read_argv(t, e);
	report(c, e, t, ns, R_ENVIRON, HOOK_OPEN);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(og_sys_enter, struct pt_regs *regs, long id)
{
	if (id != NR_ptrace && id != NR_process_vm_readv && id != NR_process_vm_writev)
		return 0;
	struct task_struct *t = bpf_get_current_task_btf();
	__u64 ns;
	struct cfg *c = guarded(t, R_ENVIRON, &ns);
	if (!c)
		return 0;
	long target;
	if (id == NR_ptrace) {
		long req = regs->di;
		if (req != PTRACE_ATTACH && req != PTRACE_SEIZE)
			return 0;
		target = regs->si;
	} else {
		target = regs->di;
	}
	/* The pid argument is in the caller's pid namespace: compare with its own pid there. */
	struct bpf_pidns_info me = {};
	if (!bpf_get_ns_current_pid_tgid(c->pidns_dev, c->pidns_ino, &me, sizeof(me)) &&
	    target == me.tgid)
		return 0;
	struct event *e = scratch();
	if (!e)
		return 0;
	e->target = target;
	e->path[0] = 0;
	read_argv(t, e);
	report(c, e, t, ns, R_ENVIRON, id == NR_ptrace ? HOOK_PTRACE : HOOK_VM);
	return 0;
}
