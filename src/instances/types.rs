//! The instance types of REQ-INST-002.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InstanceType {
    pub name: &'static str,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub disk_gib: u64,
}

pub const INSTANCE_TYPES: [InstanceType; 5] = [
    InstanceType { name: "t2.nano", vcpus: 1, memory_mib: 512, disk_gib: 8 },
    InstanceType { name: "t2.micro", vcpus: 1, memory_mib: 1024, disk_gib: 8 },
    InstanceType { name: "t2.small", vcpus: 1, memory_mib: 2048, disk_gib: 20 },
    InstanceType { name: "t2.medium", vcpus: 2, memory_mib: 4096, disk_gib: 30 },
    InstanceType { name: "t2.large", vcpus: 2, memory_mib: 8192, disk_gib: 30 },
];

pub fn find(name: &str) -> Option<InstanceType> {
    INSTANCE_TYPES.iter().copied().find(|t| t.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    // REQ-INST-002
    #[test]
    fn the_five_types_match_the_table() {
        let table: Vec<(&str, u32, u64, u64)> =
            INSTANCE_TYPES.iter().map(|t| (t.name, t.vcpus, t.memory_mib, t.disk_gib)).collect();
        assert_eq!(
            table,
            [
                ("t2.nano", 1, 512, 8),
                ("t2.micro", 1, 1024, 8),
                ("t2.small", 1, 2048, 20),
                ("t2.medium", 2, 4096, 30),
                ("t2.large", 2, 8192, 30)
            ]
        );
        assert_eq!(find("t2.small").unwrap().disk_gib, 20);
        assert!(find("t2.xlarge").is_none());
    }
}
