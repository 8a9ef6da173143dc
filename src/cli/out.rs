//! Writing to stdout without panicking when the reader goes away
//! (`decache tokenize ... | head`): a closed pipe ends the program quietly.
use std::io::Write;

pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|_| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to stdout: {e}");
        std::process::exit(1);
    }
}

/// `print!` that exits quietly on a closed pipe.
macro_rules! out {
    ($($t:tt)*) => { $crate::cli::out::write_stdout(format_args!($($t)*)) };
}

/// `println!` that exits quietly on a closed pipe.
macro_rules! outln {
    () => { $crate::cli::out::write_stdout(format_args!("\n")) };
    ($($t:tt)*) => { $crate::cli::out::write_stdout(format_args!("{}\n", format_args!($($t)*))) };
}
