//! A reader of the kernel's BTF (`/sys/kernel/btf/vmlinux`), just enough to find where kernel
//! structs keep the members the kernel programs read. aya-ebpf has no CO-RE, so these offsets
//! are computed here and handed to the programs.
//!
//! Every byte is treated as hostile: a truncated or malformed file gives a [`BtfError`], never a
//! panic or an out-of-bounds read.

use std::{collections::HashMap, path::Path};

use stdtrace_common::KernelLayout;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors reading BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error(
        "this kernel publishes no BTF at {path} (it needs CONFIG_DEBUG_INFO_BTF=y; or pass a BTF file with --btf)"
    )]
    Missing { path: String },
    #[error("reading BTF from {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("the kernel's BTF has no {0}")]
    NotFound(String),
}

#[derive(Clone, Copy, Debug)]
struct TypeRecord {
    /// Offset of the `struct btf_type` in the type section.
    at: usize,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    /// `size` or `type`, depending on the kind.
    size_or_type: u32,
}

/// A member of a struct or union.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Member {
    /// Offset from the start of the outermost struct, in bits.
    pub bit_offset: u64,
    /// Type id of the member.
    pub type_id: u32,
    /// Width in bits when the member is a bitfield.
    pub bitfield_size: u32,
}

/// Parsed BTF: types by id, and an index of struct, union and typedef names.
pub struct Btf {
    types_section: Vec<u8>,
    strings: Vec<u8>,
    /// `types[id]`; id 0 is `void`.
    types: Vec<TypeRecord>,
    by_name: HashMap<(u32, String), u32>,
}

fn u16_at(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        bytes.get(at..at.checked_add(2)?)?.try_into().ok()?,
    ))
}

fn u32_at(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_kernel() -> Result<Self, BtfError> {
        Self::from_path(Path::new(VMLINUX_BTF))
    }

    /// Reads BTF from a file (the kernel's, or one from btfhub for a kernel without it).
    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                BtfError::Missing {
                    path: path.display().to_string(),
                }
            } else {
                BtfError::Read {
                    path: path.display().to_string(),
                    source,
                }
            }
        })?;
        Self::parse(&bytes)
    }

    /// Parses raw BTF (little-endian, as on x86_64).
    pub fn parse(bytes: &[u8]) -> Result<Self, BtfError> {
        let magic = u16_at(bytes, 0).ok_or(BtfError::Malformed("file shorter than its header"))?;
        if magic != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let field = |at| u32_at(bytes, at).ok_or(BtfError::Malformed("truncated header"));
        let hdr_len = field(4)? as usize;
        let type_off = field(8)? as usize;
        let type_len = field(12)? as usize;
        let str_off = field(16)? as usize;
        let str_len = field(20)? as usize;
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            bytes.get(start..start.checked_add(len)?)
        };
        let types_section = section(type_off, type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?
            .to_vec();
        let strings = section(str_off, str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();

        let mut btf = Btf {
            types_section,
            strings,
            types: vec![TypeRecord {
                at: 0,
                kind: 0,
                vlen: 0,
                kind_flag: false,
                size_or_type: 0,
            }],
            by_name: HashMap::new(),
        };
        btf.index_types()?;
        Ok(btf)
    }

    fn index_types(&mut self) -> Result<(), BtfError> {
        let data = &self.types_section;
        let mut at = 0usize;
        while at < data.len() {
            let truncated = BtfError::Malformed("truncated type record");
            let name_off = u32_at(data, at).ok_or(truncated)?;
            let info = u32_at(data, at + 4).ok_or(BtfError::Malformed("truncated type record"))?;
            let size_or_type =
                u32_at(data, at + 8).ok_or(BtfError::Malformed("truncated type record"))?;
            let vlen = info & 0xffff;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 != 0;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            let record = TypeRecord {
                at,
                kind,
                vlen,
                kind_flag,

                size_or_type,
            };
            let next = at
                .checked_add(12 + extra)
                .filter(|next| *next <= data.len())
                .ok_or(BtfError::Malformed(
                    "type record runs past the type section",
                ))?;
            if matches!(kind, KIND_STRUCT | KIND_UNION | KIND_TYPEDEF) && name_off != 0 {
                let id = self.types.len() as u32;
                if let Some(name) = self.string(name_off) {
                    // The first definition wins; BTF of modules may repeat names.
                    self.by_name.entry((kind, name.to_owned())).or_insert(id);
                }
            }
            self.types.push(record);
            at = next;
        }
        Ok(())
    }

    fn string(&self, offset: u32) -> Option<&str> {
        let tail = self.strings.get(offset as usize..)?;
        let end = tail.iter().position(|b| *b == 0)?;
        std::str::from_utf8(&tail[..end]).ok()
    }

    fn record(&self, id: u32) -> Result<TypeRecord, BtfError> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Follows typedefs and qualifiers to the type they name.
    fn resolve(&self, mut id: u32) -> Result<TypeRecord, BtfError> {
        for _ in 0..32 {
            let record = self.record(id)?;
            match record.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = record.size_or_type;
                }
                _ => return Ok(record),
            }
        }
        Err(BtfError::Malformed("typedef chain too long"))
    }

    fn named(&self, kind: u32, name: &str) -> Result<u32, BtfError> {
        self.by_name
            .get(&(kind, name.to_owned()))
            .copied()
            .ok_or_else(|| {
                let what = match kind {
                    KIND_STRUCT => "struct",
                    KIND_UNION => "union",
                    _ => "typedef",
                };
                BtfError::NotFound(format!("{what} {name}"))
            })
    }

    /// Size in bytes of `struct name`.
    pub fn struct_size(&self, name: &str) -> Result<u32, BtfError> {
        Ok(self.record(self.named(KIND_STRUCT, name)?)?.size_or_type)
    }

    fn members(&self, record: TypeRecord) -> impl Iterator<Item = (Option<&str>, Member)> + '_ {
        (0..record.vlen as usize).filter_map(move |i| {
            let at = record.at + 12 + i * 12;
            let name_off = u32_at(&self.types_section, at)?;
            let type_id = u32_at(&self.types_section, at + 4)?;
            let offset = u32_at(&self.types_section, at + 8)?;
            let (bit_offset, bitfield_size) = if record.kind_flag {
                (offset & 0x00ff_ffff, offset >> 24)
            } else {
                (offset, 0)
            };
            let name = if name_off == 0 {
                None
            } else {
                Some(self.string(name_off).unwrap_or(""))
            };
            Some((
                name,
                Member {
                    bit_offset: bit_offset as u64,
                    type_id,
                    bitfield_size,
                },
            ))
        })
    }

    /// Finds `name` among the members of a struct or union, looking through anonymous structs
    /// and unions as C does.
    fn find_member(&self, record: TypeRecord, name: &str, depth: u32) -> Option<Member> {
        if depth > 8 {
            return None;
        }
        for (member_name, member) in self.members(record) {
            match member_name {
                Some(found) if found == name => return Some(member),
                None => {
                    let Ok(inner) = self.resolve(member.type_id) else {
                        continue;
                    };
                    if matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                        && let Some(nested) = self.find_member(inner, name, depth + 1)
                    {
                        return Some(Member {
                            bit_offset: member.bit_offset + nested.bit_offset,
                            ..nested
                        });
                    }
                }
                Some(_) => {}
            }
        }
        None
    }

    /// Byte offset of a member of `struct name`; `path` may name nested members, as in
    /// `"thread.fsbase"`.
    pub fn member_offset(&self, struct_name: &str, path: &str) -> Result<u32, BtfError> {
        let mut record = self.record(self.named(KIND_STRUCT, struct_name)?)?;
        let mut bits = 0u64;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            let not_found = || BtfError::NotFound(format!("member {path} in struct {struct_name}"));
            let member = self.find_member(record, part, 0).ok_or_else(not_found)?;
            if member.bitfield_size != 0 {
                return Err(BtfError::NotFound(format!(
                    "{struct_name}.{path} as a byte-addressable member (it is a bitfield)"
                )));
            }
            bits += member.bit_offset;
            if parts.peek().is_some() {
                record = self.resolve(member.type_id)?;
                if !matches!(record.kind, KIND_STRUCT | KIND_UNION) {
                    return Err(not_found());
                }
            }
        }
        if !bits.is_multiple_of(8) {
            return Err(BtfError::Malformed("member is not byte aligned"));
        }
        u32::try_from(bits / 8).map_err(|_| BtfError::Malformed("member offset too large"))
    }

    /// Number of parameters of the function a BTF-enabled tracepoint's typedef names, not
    /// counting the leading `void *__data` (`btf_trace_<name>` is a pointer to that function).
    pub fn tracepoint_arity(&self, tracepoint: &str) -> Result<u32, BtfError> {
        let typedef = self.named(KIND_TYPEDEF, &format!("btf_trace_{tracepoint}"))?;
        let pointer = self.resolve(typedef)?;
        if pointer.kind != KIND_PTR {
            return Err(BtfError::Malformed("btf_trace typedef is not a pointer"));
        }
        let proto = self.resolve(pointer.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO {
            return Err(BtfError::Malformed(
                "btf_trace typedef does not point at a function",
            ));
        }
        Ok(proto.vlen.saturating_sub(1))
    }
}

/// Reads the offsets the kernel programs need from the kernel's BTF.
pub fn kernel_layout(btf: &Btf) -> Result<KernelLayout, BtfError> {
    Ok(KernelLayout {
        pt_regs_size: btf.struct_size("pt_regs")?,
        pt_regs_di: btf.member_offset("pt_regs", "di")?,
        pt_regs_si: btf.member_offset("pt_regs", "si")?,
        pt_regs_dx: btf.member_offset("pt_regs", "dx")?,
        pt_regs_sp: btf.member_offset("pt_regs", "sp")?,
        task_tgid: btf.member_offset("task_struct", "tgid")?,
        task_files: btf.member_offset("task_struct", "files")?,
        files_fdt: btf.member_offset("files_struct", "fdt")?,
        fdtable_max_fds: btf.member_offset("fdtable", "max_fds")?,
        fdtable_fd: btf.member_offset("fdtable", "fd")?,
        file_inode: btf.member_offset("file", "f_inode")?,
        file_flags: btf.member_offset("file", "f_flags")?,
        inode_mode: btf.member_offset("inode", "i_mode")?,
        inode_ino: btf.member_offset("inode", "i_ino")?,
        inode_rdev: btf.member_offset("inode", "i_rdev")?,
        inode_sb: btf.member_offset("inode", "i_sb")?,
        super_block_dev: btf.member_offset("super_block", "s_dev")?,
        inode_pipe: btf.member_offset("inode", "i_pipe")?,
        pipe_readers: btf.member_offset("pipe_inode_info", "readers")?,
        pipe_writers: btf.member_offset("pipe_inode_info", "writers")?,
        exit_has_group_dead: u32::from(btf.tracepoint_arity("sched_process_exit")? >= 2),
        task_fsbase: btf.member_offset("task_struct", "thread.fsbase")?,
        pt_regs_orig_ax: btf.member_offset("pt_regs", "orig_ax")?,
        switch_has_prev_state: u32::from(btf.tracepoint_arity("sched_switch")? >= 4),
        pipe_head: btf.member_offset("pipe_inode_info", "head")?,
        pipe_tail: btf.member_offset("pipe_inode_info", "tail")?,
        pipe_max_usage: btf.member_offset("pipe_inode_info", "max_usage")?,
        pipe_ring_size: btf.member_offset("pipe_inode_info", "ring_size")?,
        pipe_bufs: btf.member_offset("pipe_inode_info", "bufs")?,
        pipe_buffer_size: btf.struct_size("pipe_buffer")?,
        pipe_buffer_len: btf.member_offset("pipe_buffer", "len")?,
        file_private_data: btf.member_offset("file", "private_data")?,
        pid_tasks: btf.member_offset("pid", "tasks")?,
        task_pid_links: btf.member_offset("task_struct", "pid_links")?,
        task_stack: btf.member_offset("task_struct", "stack")?,
        task_state: btf.member_offset("task_struct", "__state")?,
        task_last_arrival: btf.member_offset("task_struct", "sched_info.last_arrival")?,
        inode_private: btf.member_offset("inode", "i_private")?,
        file_mode: btf.member_offset("file", "f_mode")?,
        task_sighand: btf.member_offset("task_struct", "sighand")?,
        sighand_sigpipe_handler: {
            // action[SIGPIPE - 1].sa.sa_handler
            let action = btf.member_offset("sighand_struct", "action")?;
            let size = btf.struct_size("k_sigaction")?;
            action + 12 * size + btf.member_offset("k_sigaction", "sa.sa_handler")?
        },
        task_blocked: btf.member_offset("task_struct", "blocked")?,
        task_exit_code: btf.member_offset("task_struct", "exit_code")?,
        siginfo_code: btf.member_offset("kernel_siginfo", "si_code")?,
        task_pid: btf.member_offset("task_struct", "pid")?,
        pt_regs_r14: btf.member_offset("pt_regs", "r14")?,
        pt_regs_ip: btf.member_offset("pt_regs", "ip")?,
        pt_regs_r10: btf.member_offset("pt_regs", "r10")?,
        socket_alloc_inode: btf.member_offset("socket_alloc", "vfs_inode")?,
        socket_sk: btf.member_offset("socket", "sk")?,
        sock_receive_qlen: btf.member_offset("sock", "sk_receive_queue.qlen")?,
        sock_max_ack_backlog: btf.member_offset("sock", "sk_max_ack_backlog")?,
        sock_rcvbuf: btf.member_offset("sock", "sk_rcvbuf")?,
        sock_sndbuf: btf.member_offset("sock", "sk_sndbuf")?,
        sock_wmem_queued: btf.member_offset("sock", "sk_wmem_queued")?,
        sock_wmem_alloc: btf.member_offset("sock", "sk_wmem_alloc")?,
        sock_rmem_alloc: btf.member_offset("sock", "sk_backlog.rmem_alloc")?,
        _pad: 0,
    })
}

/// Reads where the tty structs keep what the pty inspection program reads. A kernel without one
/// of them (or without n_tty in its BTF) gives an error: ptys' fill then stays unknown, and
/// nothing else depends on it.
pub fn tty_layout(btf: &Btf) -> Result<stdtrace_common::TtyLayout, BtfError> {
    Ok(stdtrace_common::TtyLayout {
        valid: 1,
        file_dentry: btf.member_offset("file", "f_path.dentry")?,
        dentry_fsdata: btf.member_offset("dentry", "d_fsdata")?,
        dentry_sb: btf.member_offset("dentry", "d_sb")?,
        super_block_magic: btf.member_offset("super_block", "s_magic")?,
        tty_index: btf.member_offset("tty_struct", "index")?,
        tty_link: btf.member_offset("tty_struct", "link")?,
        tty_port: btf.member_offset("tty_struct", "port")?,
        tty_ldisc: btf.member_offset("tty_struct", "ldisc")?,
        tty_disc_data: btf.member_offset("tty_struct", "disc_data")?,
        tty_flags: btf.member_offset("tty_struct", "flags")?,
        tty_count: btf.member_offset("tty_struct", "count")?,
        ldisc_ops: btf.member_offset("tty_ldisc", "ops")?,
        ldisc_ops_num: btf.member_offset("tty_ldisc_ops", "num")?,
        port_buf_head: btf.member_offset("tty_port", "buf.head")?,
        port_mem_used: btf.member_offset("tty_port", "buf.mem_used")?,
        port_mem_limit: btf.member_offset("tty_port", "buf.mem_limit")?,
        buffer_next: btf.member_offset("tty_buffer", "next")?,
        buffer_commit: btf.member_offset("tty_buffer", "commit")?,
        buffer_read: btf.member_offset("tty_buffer", "read")?,
        n_tty_read_head: btf.member_offset("n_tty_data", "read_head")?,
        n_tty_read_tail: btf.member_offset("n_tty_data", "read_tail")?,
    })
}

/// Where `struct pt_regs` keeps each general-purpose register, so that userspace can read the
/// raw copy a [`stdtrace_common::WriteRecord`] carries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegsLayout {
    /// Offsets indexed by DWARF register number on x86_64 (rax, rdx, rcx, rbx, rsi, rdi, rbp,
    /// rsp, r8..r15), then the instruction pointer at index 16.
    pub offsets: [u32; 17],
}

impl RegsLayout {
    /// Reads `struct pt_regs`'s layout from BTF.
    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        const NAMES: [&str; 17] = [
            "ax", "dx", "cx", "bx", "si", "di", "bp", "sp", "r8", "r9", "r10", "r11", "r12", "r13",
            "r14", "r15", "ip",
        ];
        let mut offsets = [0u32; 17];
        for (slot, name) in offsets.iter_mut().zip(NAMES) {
            *slot = btf.member_offset("pt_regs", name)?;
        }
        Ok(Self { offsets })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a small BTF blob by hand: `struct outer { int a; union { long b; int c; }; struct
    /// inner in; }`, `struct inner { char pad[8]; long deep; }` and a tracepoint typedef.
    fn sample() -> Vec<u8> {
        let mut strings = vec![0u8];
        let mut name = |s: &str| {
            let off = strings.len() as u32;
            strings.extend_from_slice(s.as_bytes());
            strings.push(0);
            off
        };
        let (n_int, n_long, n_char, n_outer, n_a, n_b, n_c, n_inner, n_in, n_pad, n_deep, n_tp) = (
            name("int"),
            name("long"),
            name("char"),
            name("outer"),
            name("a"),
            name("b"),
            name("c"),
            name("inner"),
            name("in"),
            name("pad"),
            name("deep"),
            name("btf_trace_sched_process_exit"),
        );
        let mut types = Vec::new();
        let mut push = |words: &[u32]| {
            for w in words {
                types.extend_from_slice(&w.to_le_bytes());
            }
        };
        let info = |kind: u32, vlen: u32, flag: bool| (kind << 24) | vlen | ((flag as u32) << 31);
        // 1: int
        push(&[n_int, info(KIND_INT, 0, false), 4, 32]);
        // 2: long
        push(&[n_long, info(KIND_INT, 0, false), 8, 64]);
        // 3: char
        push(&[n_char, info(KIND_INT, 0, false), 1, 8]);
        // 4: anonymous union { long b; int c; }
        push(&[0, info(KIND_UNION, 2, false), 8, n_b, 2, 0, n_c, 1, 0]);
        // 5: char[8]
        push(&[0, info(KIND_ARRAY, 0, false), 0, 3, 1, 8]);
        // 6: struct inner { char pad[8]; long deep; }
        push(&[
            n_inner,
            info(KIND_STRUCT, 2, false),
            16,
            n_pad,
            5,
            0,
            n_deep,
            2,
            64,
        ]);
        // 7: struct outer { int a; union {..}; struct inner in; }
        push(&[
            n_outer,
            info(KIND_STRUCT, 3, false),
            32,
            n_a,
            1,
            0,
            0,
            4,
            64,
            n_in,
            6,
            128,
        ]);
        // 8: ptr -> 7
        push(&[0, info(KIND_PTR, 0, false), 7]);
        // 9: func proto (void *, struct outer *, int): 3 params
        push(&[0, info(KIND_FUNC_PROTO, 3, false), 0, 0, 8, 0, 8, 0, 1]);
        // 10: ptr -> 9
        push(&[0, info(KIND_PTR, 0, false), 9]);
        // 11: typedef btf_trace_sched_process_exit -> 10
        push(&[n_tp, info(KIND_TYPEDEF, 0, false), 10]);

        let mut blob = Vec::new();
        blob.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        blob.extend_from_slice(&[1, 0]);
        for w in [
            24u32,
            0,
            types.len() as u32,
            types.len() as u32,
            strings.len() as u32,
        ] {
            blob.extend_from_slice(&w.to_le_bytes());
        }
        blob.extend_from_slice(&types);
        blob.extend_from_slice(&strings);
        blob
    }

    #[test]
    fn finds_members_through_anonymous_unions_and_nested_structs() {
        let btf = Btf::parse(&sample()).unwrap();
        assert_eq!(btf.member_offset("outer", "a").unwrap(), 0);
        assert_eq!(btf.member_offset("outer", "b").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "c").unwrap(), 8);
        assert_eq!(btf.member_offset("outer", "in.deep").unwrap(), 24);
        assert_eq!(btf.struct_size("outer").unwrap(), 32);
        assert!(matches!(
            btf.member_offset("outer", "nope"),
            Err(BtfError::NotFound(_))
        ));
        assert!(matches!(
            btf.member_offset("missing", "a"),
            Err(BtfError::NotFound(_))
        ));
        assert_eq!(btf.tracepoint_arity("sched_process_exit").unwrap(), 2);
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let blob = sample();
        for len in 0..blob.len() {
            let _ = Btf::parse(&blob[..len]);
        }
        let mut corrupt = blob.clone();
        for i in 0..corrupt.len() {
            let saved = corrupt[i];
            corrupt[i] = 0xff;
            if let Ok(btf) = Btf::parse(&corrupt) {
                let _ = btf.member_offset("outer", "in.deep");
                let _ = btf.tracepoint_arity("sched_process_exit");
            }
            corrupt[i] = saved;
        }
        assert!(matches!(
            Btf::parse(b"not btf"),
            Err(BtfError::Malformed(_))
        ));
    }

    #[test]
    fn reads_the_running_kernels_layout() {
        let Ok(btf) = Btf::from_kernel() else {
            // Machines without BTF are covered by the error tests; this one checks real data.
            return;
        };
        let layout = kernel_layout(&btf).unwrap();
        assert!(layout.pt_regs_size >= 21 * 8);
        assert!(layout.task_tgid > 0 && layout.task_files > 0);
        let regs = RegsLayout::from_btf(&btf).unwrap();
        assert_eq!(regs.offsets[5], layout.pt_regs_di);
        assert_eq!(regs.offsets[7], layout.pt_regs_sp);
    }
}
