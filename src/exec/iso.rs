//! Building the NoCloud `cidata` ISO with whichever ISO tool the host has.

use std::path::Path;
use std::time::Duration;

use super::{ExecError, ToolCommand};
use crate::platform::IsoTool;

/// cloud-init's NoCloud datasource finds its seed on a volume with this label.
pub const CIDATA_LABEL: &str = "cidata";

/// The command that packs `source_dir` into an ISO 9660 image labelled `cidata`.
pub fn cidata_command(tool: IsoTool, source_dir: &Path, output: &Path, timeout: Duration) -> ToolCommand {
    let cmd = ToolCommand::new(tool.program(), timeout);
    match tool {
        IsoTool::Genisoimage | IsoTool::Mkisofs => cmd
            .args(["-quiet", "-output"])
            .arg(output)
            .args(["-volid", CIDATA_LABEL, "-joliet", "-rock"])
            .arg(source_dir),
        IsoTool::Xorriso => cmd
            .args(["-as", "mkisofs", "-quiet", "-output"])
            .arg(output)
            .args(["-volid", CIDATA_LABEL, "-joliet", "-rock"])
            .arg(source_dir),
        IsoTool::Hdiutil => cmd
            .args(["makehybrid", "-quiet", "-iso", "-joliet", "-default-volume-name", CIDATA_LABEL, "-o"])
            .arg(output)
            .arg(source_dir),
    }
}

/// The first tool of `preference` that `is_installed` accepts.
pub fn choose_tool(preference: &[IsoTool], is_installed: impl Fn(&str) -> bool) -> Option<IsoTool> {
    preference.iter().copied().find(|tool| is_installed(tool.program()))
}

pub async fn build_cidata(tool: IsoTool, source_dir: &Path, output: &Path, timeout: Duration) -> Result<(), ExecError> {
    super::run(cidata_command(tool, source_dir, output, timeout)).await.map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{Arch, Host, Os};

    fn argv(tool: IsoTool) -> String {
        cidata_command(tool, Path::new("/d/seed"), Path::new("/d/cloud-init.iso"), Duration::from_secs(1)).to_string()
    }

    #[test]
    fn argument_vectors_per_tool() {
        assert_eq!(
            argv(IsoTool::Genisoimage),
            "genisoimage -quiet -output /d/cloud-init.iso -volid cidata -joliet -rock /d/seed"
        );
        assert_eq!(
            argv(IsoTool::Mkisofs),
            "mkisofs -quiet -output /d/cloud-init.iso -volid cidata -joliet -rock /d/seed"
        );
        assert_eq!(
            argv(IsoTool::Xorriso),
            "xorriso -as mkisofs -quiet -output /d/cloud-init.iso -volid cidata -joliet -rock /d/seed"
        );
        assert_eq!(
            argv(IsoTool::Hdiutil),
            "hdiutil makehybrid -quiet -iso -joliet -default-volume-name cidata -o /d/cloud-init.iso /d/seed"
        );
    }

    #[test]
    fn the_first_installed_tool_in_preference_order_is_chosen() {
        let linux = Host { os: Os::Linux, arch: Arch::X86_64 };
        let mac = Host { os: Os::MacOs, arch: Arch::Aarch64 };
        assert_eq!(choose_tool(linux.iso_tools(), |p| p != "genisoimage"), Some(IsoTool::Mkisofs));
        assert_eq!(choose_tool(linux.iso_tools(), |p| p == "xorriso"), Some(IsoTool::Xorriso));
        assert_eq!(choose_tool(linux.iso_tools(), |_| true), Some(IsoTool::Genisoimage));
        assert_eq!(choose_tool(mac.iso_tools(), |_| true), Some(IsoTool::Hdiutil));
        assert_eq!(choose_tool(linux.iso_tools(), |_| false), None);
    }
}
