#![deny(unsafe_code)]

fn main() -> std::process::ExitCode {
    veilfs::cli::main()
}
