use std::process::ExitCode;

fn main() -> ExitCode {
    ec2local::cli::main()
}
