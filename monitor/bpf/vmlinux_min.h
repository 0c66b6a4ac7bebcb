/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The few kernel types the enforcer reads, declared for CO-RE: libbpf relocates every field
 * access against the running kernel's BTF (/sys/kernel/btf/vmlinux) at load time, so only the
 * names matter here, not the offsets or the other members. Written for ociguard; a
 * `bpftool btf dump` of a whole kernel is not needed to build it.
 */
#ifndef OCIGUARD_VMLINUX_MIN_H
#define OCIGUARD_VMLINUX_MIN_H

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;
typedef __u8 u8;
typedef __u16 u16;
typedef __u32 u32;
typedef __u64 u64;
typedef __s64 s64;
typedef __s32 s32;
typedef _Bool bool;
#define true 1
#define false 0
typedef int pid_t;
typedef __u16 umode_t;
typedef __u32 dev_t;
typedef long long time64_t;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_PERCPU_ARRAY = 6,
	BPF_MAP_TYPE_RINGBUF = 27,
};

enum {
	BPF_F_NO_PREALLOC = 1,
};

struct pt_regs {
	unsigned long di;
	unsigned long si;
	unsigned long dx;
	unsigned long r10;
	unsigned long orig_ax;
} __attribute__((preserve_access_index));

struct qstr {
	u32 len;
	const unsigned char *name;
} __attribute__((preserve_access_index));

struct super_block {
	dev_t s_dev;
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct inode {
	umode_t i_mode;
	unsigned long i_ino;
	dev_t i_rdev;
	unsigned int __i_nlink;
	struct super_block *i_sb;
} __attribute__((preserve_access_index));

/* ctime: one timespec64 until 6.6, `__i_ctime` until 6.11, then two fields. */
struct inode___split {
	time64_t i_ctime_sec;
	u32 i_ctime_nsec;
} __attribute__((preserve_access_index));

struct timespec64 {
	time64_t tv_sec;
	long tv_nsec;
} __attribute__((preserve_access_index));

struct inode___ts {
	struct timespec64 __i_ctime;
} __attribute__((preserve_access_index));

struct inode___old {
	struct timespec64 i_ctime;
} __attribute__((preserve_access_index));

struct dentry {
	struct qstr d_name;
	struct inode *d_inode;
} __attribute__((preserve_access_index));

struct path {
	struct dentry *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
	struct inode *f_inode;
} __attribute__((preserve_access_index));

struct fdtable {
	unsigned int max_fds;
	struct file **fd;
} __attribute__((preserve_access_index));

struct files_struct {
	struct fdtable *fdt;
} __attribute__((preserve_access_index));

struct ns_common {
	unsigned int inum;
} __attribute__((preserve_access_index));

struct mnt_namespace {
	struct ns_common ns;
} __attribute__((preserve_access_index));

struct nsproxy {
	struct mnt_namespace *mnt_ns;
} __attribute__((preserve_access_index));

struct mm_struct {
	unsigned long arg_start;
	unsigned long arg_end;
	struct file *exe_file;
} __attribute__((preserve_access_index));

struct upid {
	int nr;
} __attribute__((preserve_access_index));

struct pid {
	struct upid numbers[1];
} __attribute__((preserve_access_index));

struct task_struct {
	pid_t pid;
	pid_t tgid;
	struct task_struct *real_parent;
	struct mm_struct *mm;
	struct files_struct *files;
	struct nsproxy *nsproxy;
	char comm[16];
} __attribute__((preserve_access_index));

struct proc_inode {
	struct pid *pid;
	struct inode vfs_inode;
} __attribute__((preserve_access_index));

struct linux_binprm {
	struct file *file;
	const char *filename;
} __attribute__((preserve_access_index));

struct bpf_pidns_info {
	__u32 pid;
	__u32 tgid;
};

#endif
