use std::io::Write;

fn main() {
    let mut args = std::env::args_os();
    let _ = args.next();
    let rest: Vec<_> = args.collect();
    if rest.first().and_then(|a| a.to_str()) == Some(flocks::supervisor::SUBCOMMAND) {
        std::process::exit(flocks::supervisor::main(rest[1..].to_vec()));
    }
    if rest.first().and_then(|a| a.to_str()) == Some(flocks::proxy::forward::SUBCOMMAND) {
        std::process::exit(flocks::proxy::forward::main(rest[1..].to_vec()));
    }
    let cli = flocks::help::parse();
    let code = match flocks::commands::dispatch(cli) {
        Ok(exit) => exit.code(),
        Err(e) => {
            // Red on a terminal (as --color says); quiet if stderr is gone.
            let red = anstyle::AnsiColor::Red.on_default().bold();
            let _ = writeln!(anstream::stderr(), "{red}error:{red:#} {e}");
            e.exit().code()
        }
    };
    std::process::exit(code);
}
