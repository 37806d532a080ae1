//! A failed write's call path, as the kernel can recognise it: the places above the stack
//! pointer where the unwinder found the return addresses, with their values ([`Learned`]), and
//! the site id each distinct path gets ([`SiteIds`]). The namer learns a path from the first
//! failure's stack; `kernel::call_sites` hands it to the kernel, which counts the path's later
//! failures itself.

use std::collections::HashMap;

use stdtrace_common::{FINGERPRINT_FRAMES, FINGERPRINT_SPAN, Fingerprint, ImageBases};

/// Return addresses are used up to this far above the stack pointer: the kernel reads that
/// much of the stack in one go to check them.
const MAX_OFFSET: u64 = FINGERPRINT_SPAN as u64 - 8;

/// A call path learned from a reported write, to be handed to the kernel: keyed by the
/// binary, with its addresses normalized against the process's code bases
/// ([`ImageBases::normalize`]), so that it is one path in every process of that binary.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learned {
    /// The binary (device and inode of the executable).
    pub dev: u32,
    pub ino: u64,
    /// The pc after the syscall instruction.
    pub ip: u64,
    /// Where the first return address is, above the stack pointer, and its value.
    pub first_offset: u32,
    pub first_return: u64,
    /// The next return addresses: (offset above the stack pointer, value), innermost first.
    pub frames: Vec<(u32, u64)>,
}

impl Learned {
    /// The call path of a write made with stack pointer `sp` at pc `ip` by a process of
    /// `image`, from the return addresses the unwinder found and where (`(stack address,
    /// value)`, innermost first); `None` when no return address was found on the stack.
    pub fn from_stack(
        image: &ImageBases,
        ip: u64,
        sp: u64,
        return_slots: &[(u64, u64)],
    ) -> Option<Self> {
        let offsets: Vec<(u32, u64)> = return_slots
            .iter()
            .map_while(|&(slot, value)| {
                let offset = slot
                    .checked_sub(sp)
                    .filter(|offset| *offset <= MAX_OFFSET)?;
                Some((offset as u32, image.normalize(value)))
            })
            .take(FINGERPRINT_FRAMES + 1)
            .collect();
        let (&(first_offset, first_return), rest) = offsets.split_first()?;
        Some(Self {
            dev: image.dev,
            ino: image.ino,
            ip: image.normalize(ip),
            first_offset,
            first_return,
            frames: rest.to_vec(),
        })
    }

    /// Bytes of stack above the stack pointer that hold all its return addresses.
    pub fn span(&self) -> u32 {
        self.frames
            .iter()
            .map(|&(offset, _)| offset)
            .chain([self.first_offset])
            .max()
            .unwrap_or(0)
            + 8
    }

    pub fn fingerprint(&self, site: u32) -> Fingerprint {
        let mut fingerprint = Fingerprint {
            site,
            frames: self.frames.len() as u32,
            ..Fingerprint::default()
        };
        for (index, &(offset, value)) in self.frames.iter().enumerate() {
            fingerprint.offsets[index] = offset;
            fingerprint.values[index] = value;
        }
        fingerprint
    }
}

/// Call-site ids, given by userspace: one per distinct call path of a binary, the same in all
/// its processes. Bounded by the binaries' code, not by the processes seen.
#[derive(Debug, Default)]
pub struct SiteIds {
    ids: HashMap<Learned, u32>,
    last: u32,
}

impl SiteIds {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `learned`'s call path, and whether it is new.
    pub fn id(&mut self, learned: &Learned) -> (u32, bool) {
        if let Some(&id) = self.ids.get(learned) {
            return (id, false);
        }
        // 0 marks an unused fingerprint in the kernel.
        self.last = self.last.wrapping_add(1).max(1);
        let id = self.last;
        self.ids.insert(learned.clone(), id);
        (id, true)
    }
}

#[cfg(test)]
mod tests {
    use stdtrace_common::image::{EXE_TAG, MMAP_TAG};

    use super::*;

    /// A process of binary (8, 42) with its code at `exe` and libraries below `mmap`.
    fn image(exe: u64, mmap: u64) -> ImageBases {
        ImageBases {
            dev: 8,
            _pad: 0,
            ino: 42,
            start_code: exe,
            end_code: exe + 0x10_0000,
            mmap_base: mmap,
        }
    }

    #[test]
    fn a_fingerprint_is_the_return_addresses_above_the_stack_pointer() {
        let sp = 0x7ffd_0000_1000;
        let slots = [
            (sp, 0x40_1234),
            (sp + 0x28, 0x40_2000),
            (sp + 0x48, 0x40_3000),
        ];
        let bases = image(0x40_0000, 0x7f00_0000_1000);
        let learned = Learned::from_stack(&bases, 0x7f00_0000_0010, sp, &slots).unwrap();
        assert_eq!((learned.dev, learned.ino), (8, 42));
        assert_eq!(learned.ip, 0xff0 ^ MMAP_TAG);
        assert_eq!(learned.first_offset, 0);
        assert_eq!(learned.first_return, 0x1234 | EXE_TAG);
        assert_eq!(
            learned.frames,
            vec![(0x28, 0x2000 | EXE_TAG), (0x48, 0x3000 | EXE_TAG)]
        );
        let fingerprint = learned.fingerprint(3);
        assert_eq!(fingerprint.site, 3);
        assert_eq!(fingerprint.frames, 2);
        assert_eq!(fingerprint.offsets[..2], [0x28, 0x48]);
        assert_eq!(
            fingerprint.values[..2],
            [0x2000 | EXE_TAG, 0x3000 | EXE_TAG]
        );
    }

    #[test]
    fn the_same_path_in_two_processes_of_a_binary_is_one_path() {
        let path = |exe: u64, mmap: u64| {
            let sp = 0x7ffc_0000_0000 + exe % 0x1000;
            let slots = [(sp + 8, mmap - 0x2_0000), (sp + 0x40, exe + 0x1234)];
            Learned::from_stack(&image(exe, mmap), mmap - 0x2_1000, sp, &slots).unwrap()
        };
        let first = path(0x5555_0000_0000, 0x7f12_3456_7000);
        let second = path(0x5633_0000_0000, 0x7fa0_0000_0000);
        assert_eq!(first, second);
        let mut ids = SiteIds::new();
        assert_eq!(ids.id(&first), (1, true));
        assert_eq!(ids.id(&second), (1, false));
    }

    #[test]
    fn at_most_the_frames_a_fingerprint_holds_and_none_below_the_stack_pointer() {
        let sp = 0x1000;
        let bases = image(0x40_0000, 0x7f00_0000_0000);
        let slots: Vec<(u64, u64)> = (0..40).map(|i| (sp + 16 * i, 0x40_0000 + i)).collect();
        let learned = Learned::from_stack(&bases, 0x10, sp, &slots).unwrap();
        assert_eq!(learned.frames.len(), FINGERPRINT_FRAMES);
        assert!(Learned::from_stack(&bases, 0x10, sp, &[(sp - 8, 1)]).is_none());
        assert!(Learned::from_stack(&bases, 0x10, sp, &[]).is_none());
        // A slot below the stack pointer ends the path there.
        let cut =
            Learned::from_stack(&bases, 0x10, sp, &[(sp, 1), (sp - 8, 2), (sp + 8, 3)]).unwrap();
        assert!(cut.frames.is_empty());
    }

    #[test]
    fn site_ids_are_stable_per_path_and_never_zero() {
        let mut ids = SiteIds::new();
        let bases = image(0x40_0000, 0x7f00_0000_0000);
        let a = Learned::from_stack(&bases, 0x10, 0x1000, &[(0x1000, 5)]).unwrap();
        let b = Learned::from_stack(&bases, 0x10, 0x1000, &[(0x1000, 6)]).unwrap();
        assert_eq!(ids.id(&a), (1, true));
        assert_eq!(ids.id(&b), (2, true));
        assert_eq!(ids.id(&a), (1, false));
    }
}
