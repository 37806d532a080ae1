//! A failed write's call path, as the kernel can recognise it: the places above the stack
//! pointer where the unwinder found the return addresses, with their values ([`Learned`]), and
//! the site id each distinct path gets ([`SiteIds`]). The namer learns a path from the first
//! failure's stack; `kernel::call_sites` hands it to the kernel, which counts the path's later
//! failures itself.

use std::collections::HashMap;

use stdtrace_common::{FINGERPRINT_FRAMES, FINGERPRINT_SPAN, Fingerprint};

/// Return addresses are used up to this far above the stack pointer: the kernel reads that
/// much of the stack in one go to check them.
const MAX_OFFSET: u64 = FINGERPRINT_SPAN as u64 - 8;

/// A call path learned from a reported write, to be handed to the kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Learned {
    pub pid: u32,
    /// The pc after the syscall instruction.
    pub ip: u64,
    /// Where the first return address is, above the stack pointer, and its value.
    pub first_offset: u32,
    pub first_return: u64,
    /// The next return addresses: (offset above the stack pointer, value), innermost first.
    pub frames: Vec<(u32, u64)>,
}

impl Learned {
    /// The call path of a write made with stack pointer `sp` at pc `ip`, from the return
    /// addresses the unwinder found and where (`(stack address, value)`, innermost first);
    /// `None` when no return address was found on the stack.
    pub fn from_stack(pid: u32, ip: u64, sp: u64, return_slots: &[(u64, u64)]) -> Option<Self> {
        let offsets: Vec<(u32, u64)> = return_slots
            .iter()
            .map_while(|&(slot, value)| {
                let offset = slot
                    .checked_sub(sp)
                    .filter(|offset| *offset <= MAX_OFFSET)?;
                Some((offset as u32, value))
            })
            .take(FINGERPRINT_FRAMES + 1)
            .collect();
        let (&(first_offset, first_return), rest) = offsets.split_first()?;
        Some(Self {
            pid,
            ip,
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

/// Call-site ids, given by userspace: one per distinct call path of a process.
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

    /// Forgets the paths of a process that exited (its pid may be reused).
    pub fn process_exited(&mut self, pid: u32) {
        self.ids.retain(|learned, _| learned.pid != pid);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fingerprint_is_the_return_addresses_above_the_stack_pointer() {
        let sp = 0x7ffd_0000_1000;
        let slots = [
            (sp, 0x40_1234),
            (sp + 0x28, 0x40_2000),
            (sp + 0x48, 0x40_3000),
        ];
        let learned = Learned::from_stack(7, 0x7f00_0000_0010, sp, &slots).unwrap();
        assert_eq!(learned.first_offset, 0);
        assert_eq!(learned.first_return, 0x40_1234);
        assert_eq!(learned.frames, vec![(0x28, 0x40_2000), (0x48, 0x40_3000)]);
        let fingerprint = learned.fingerprint(3);
        assert_eq!(fingerprint.site, 3);
        assert_eq!(fingerprint.frames, 2);
        assert_eq!(fingerprint.offsets[..2], [0x28, 0x48]);
        assert_eq!(fingerprint.values[..2], [0x40_2000, 0x40_3000]);
    }

    #[test]
    fn at_most_the_frames_a_fingerprint_holds_and_none_below_the_stack_pointer() {
        let sp = 0x1000;
        let slots: Vec<(u64, u64)> = (0..40).map(|i| (sp + 16 * i, 0x40_0000 + i)).collect();
        let learned = Learned::from_stack(1, 0x10, sp, &slots).unwrap();
        assert_eq!(learned.frames.len(), FINGERPRINT_FRAMES);
        assert!(Learned::from_stack(1, 0x10, sp, &[(sp - 8, 1)]).is_none());
        assert!(Learned::from_stack(1, 0x10, sp, &[]).is_none());
        // A slot below the stack pointer ends the path there.
        let cut = Learned::from_stack(1, 0x10, sp, &[(sp, 1), (sp - 8, 2), (sp + 8, 3)]).unwrap();
        assert!(cut.frames.is_empty());
    }

    #[test]
    fn site_ids_are_stable_per_path_and_never_zero() {
        let mut ids = SiteIds::new();
        let a = Learned::from_stack(1, 0x10, 0x1000, &[(0x1000, 5)]).unwrap();
        let b = Learned::from_stack(1, 0x10, 0x1000, &[(0x1000, 6)]).unwrap();
        assert_eq!(ids.id(&a), (1, true));
        assert_eq!(ids.id(&b), (2, true));
        assert_eq!(ids.id(&a), (1, false));
        ids.process_exited(1);
        assert_eq!(ids.id(&a), (3, true), "a reused pid's paths are new");
    }
}
