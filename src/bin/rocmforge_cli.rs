//! The command-line front end. Logic lives in the library.

fn main() {
    eprintln!("rocmforge_cli: no commands yet");
    std::process::exit(2);
}
