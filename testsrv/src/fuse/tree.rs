//! The served tree and how its answers are laid out on the wire: the files and the
//! directories they imply, and the `<linux/fuse.h>` structures that describe them (attr,
//! entry, dirent), written field by field in the kernel's (native) byte order.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ROOT;

/// An answer's body, built field by field.
#[derive(Default)]
pub(super) struct Out(pub(super) Vec<u8>);

impl Out {
    pub(super) fn u16(&mut self, v: u16) -> &mut Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn u32(&mut self, v: u32) -> &mut Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn u64(&mut self, v: u64) -> &mut Out {
        self.0.extend_from_slice(&v.to_ne_bytes());
        self
    }
    pub(super) fn zeros(&mut self, n: usize) -> &mut Out {
        self.0.resize(self.0.len() + n, 0);
        self
    }
}

/// The files and the directories they imply; inode number = index + 1 (the root is 1).
pub(super) struct Tree {
    pub(super) nodes: Vec<Node>,
    /// Every node's times: a minute before the tree was made (settled).
    time: (u64, u32),
    /// Every node's owner: whoever serves it (the mount's user_id and group_id).
    owner: (u32, u32),
}

pub(super) struct Node {
    name: Vec<u8>,
    parent: u64,
    pub(super) kind: Kind,
}

pub(super) enum Kind {
    Dir(Vec<u64>),
    File { data: Vec<u8>, hangs: bool },
}

impl Node {
    pub(super) fn is_dir(&self) -> bool {
        matches!(self.kind, Kind::Dir(_))
    }
}

impl Tree {
    pub(super) fn new(files: &[(&str, &[u8])], hanging: &[&str]) -> Tree {
        let t = SystemTime::now()
            .checked_sub(Duration::from_secs(60))
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .unwrap_or_default();
        let mut tree = Tree {
            nodes: vec![Node {
                name: b".".to_vec(),
                parent: ROOT,
                kind: Kind::Dir(Vec::new()),
            }],
            time: (t.as_secs(), t.subsec_nanos()),
            // SAFETY: plain getters.
            owner: unsafe { (libc::geteuid(), libc::getegid()) },
        };
        for (path, data) in files {
            let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
            let Some((file, dirs)) = parts.split_last() else {
                continue;
            };
            let mut at = ROOT;
            for d in dirs {
                at = match tree.child(at, d.as_bytes()) {
                    Some(ino) => ino,
                    None => tree.add(at, d, Kind::Dir(Vec::new())),
                };
            }
            let hangs = hanging.contains(path);
            tree.add(
                at,
                file,
                Kind::File {
                    data: data.to_vec(),
                    hangs,
                },
            );
        }
        tree
    }

    fn add(&mut self, parent: u64, name: &str, kind: Kind) -> u64 {
        self.nodes.push(Node {
            name: name.as_bytes().to_vec(),
            parent,
            kind,
        });
        let ino = self.nodes.len() as u64;
        if let Kind::Dir(children) = &mut self.nodes[parent as usize - 1].kind {
            children.push(ino);
        }
        ino
    }

    pub(super) fn get(&self, ino: u64) -> Option<&Node> {
        self.nodes.get((ino as usize).checked_sub(1)?)
    }

    pub(super) fn child(&self, dir: u64, name: &[u8]) -> Option<u64> {
        match &self.get(dir)?.kind {
            Kind::Dir(children) => children
                .iter()
                .copied()
                .find(|&c| self.nodes[c as usize - 1].name == name),
            Kind::File { .. } => None,
        }
    }

    /// fuse_attr: ino, size, blocks, atime, mtime, ctime, their nsecs, mode, nlink, uid,
    /// gid, rdev, blksize, flags.
    pub(super) fn attr(&self, ino: u64, o: &mut Out) {
        let n = &self.nodes[ino as usize - 1];
        let (size, mode, nlink) = match &n.kind {
            Kind::Dir(_) => (4096, libc::S_IFDIR | 0o755, 2),
            Kind::File { data, .. } => (data.len() as u64, libc::S_IFREG | 0o644, 1),
        };
        let (s, ns) = self.time;
        let (uid, gid) = self.owner;
        o.u64(ino).u64(size).u64(size.div_ceil(512));
        o.u64(s).u64(s).u64(s).u32(ns).u32(ns).u32(ns);
        o.u32(mode)
            .u32(nlink)
            .u32(uid)
            .u32(gid)
            .u32(0)
            .u32(4096)
            .u32(0);
    }

    /// fuse_entry_out: nodeid, generation, entry_valid, attr_valid, their nsecs, attr.
    pub(super) fn entry(&self, ino: u64) -> Out {
        let mut o = Out::default();
        o.u64(ino).u64(0).u64(1).u64(1).u32(0).u32(0);
        self.attr(ino, &mut o);
        o
    }

    /// Entries of `dir` from index `offset` (".", "..", then the children), as many whole
    /// fuse_dirents (ino, next offset, namelen, type, name padded to 8) as fit in `size`.
    pub(super) fn dirents(&self, dir: u64, offset: u64, size: usize) -> Option<Out> {
        let node = self.get(dir)?;
        let Kind::Dir(children) = &node.kind else {
            return None;
        };
        let mut all: Vec<(u64, &[u8])> = vec![(dir, b"."), (node.parent, b"..")];
        all.extend(
            children
                .iter()
                .map(|&c| (c, &self.nodes[c as usize - 1].name[..])),
        );
        let mut o = Out::default();
        for (i, (ino, name)) in all.iter().enumerate().skip(offset as usize) {
            let len = (24 + name.len()).next_multiple_of(8);
            if o.0.len() + len > size {
                break;
            }
            let dtype = if self.nodes[*ino as usize - 1].is_dir() {
                libc::DT_DIR
            } else {
                libc::DT_REG
            };
            o.u64(*ino)
                .u64(i as u64 + 1)
                .u32(name.len() as u32)
                .u32(dtype as u32);
            o.0.extend_from_slice(name);
            o.zeros(len - 24 - name.len());
        }
        Some(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> Tree {
        Tree::new(&[("a/b/x.jpg", b"12345"), ("a/y.jpg", b"")], &["a/b/x.jpg"])
    }

    #[test]
    fn the_tree_has_the_implied_directories_and_the_hanging_file() {
        let t = tree();
        let a = t.child(ROOT, b"a").unwrap();
        let b = t.child(a, b"b").unwrap();
        let x = t.child(b, b"x.jpg").unwrap();
        assert!(t.get(a).unwrap().is_dir() && t.get(b).unwrap().is_dir());
        assert!(matches!(
            t.get(x).unwrap().kind,
            Kind::File { hangs: true, .. }
        ));
        let y = t.child(a, b"y.jpg").unwrap();
        assert!(matches!(
            t.get(y).unwrap().kind,
            Kind::File { hangs: false, .. }
        ));
        assert_eq!(t.child(ROOT, b"x.jpg"), None);
        assert_eq!(t.child(x, b"anything"), None, "a file has no children");
    }

    #[test]
    fn answers_have_the_kernels_sizes() {
        let t = tree();
        let mut attr = Out::default();
        t.attr(ROOT, &mut attr);
        assert_eq!(attr.0.len(), 88, "struct fuse_attr");
        assert_eq!(t.entry(ROOT).0.len(), 128, "struct fuse_entry_out");
    }

    #[test]
    fn dirents_are_whole_aligned_and_resume_at_their_offset() {
        let t = tree();
        let a = t.child(ROOT, b"a").unwrap();
        // ".", "..", "b", "y.jpg": 32 bytes each once padded to 8.
        let all = t.dirents(a, 0, 4096).unwrap().0;
        assert_eq!(all.len(), 4 * 32);
        let first_two = t.dirents(a, 0, 64 + 31).unwrap().0;
        assert_eq!(first_two, all[..64], "only whole entries fit");
        // Each entry's `off` is where the next read starts.
        let next = u64::from_ne_bytes(first_two[32 + 8..32 + 16].try_into().unwrap());
        assert_eq!(next, 2);
        assert_eq!(t.dirents(a, next, 4096).unwrap().0, all[64..]);
        assert_eq!(t.dirents(a, 4, 4096).unwrap().0.len(), 0, "the end");
        assert!(t.dirents(t.child(a, b"y.jpg").unwrap(), 0, 4096).is_none());
    }
}
