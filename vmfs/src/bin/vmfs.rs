//! `vmfs`: the datastore's command-line tool.

fn main() {
    eprintln!("vmfs: no subcommands yet");
    std::process::exit(2);
}
