#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::unreachable
    )
)]

fn main() -> std::process::ExitCode {
    gatehouse::cli::main()
}
