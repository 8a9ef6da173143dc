//! llama.cpp's single-dash, multi-letter flags (`-ctk q8_0`, `-ub 256`,
//! `-sys "..."`) rewritten to our long options before clap parses them (clap's
//! short options are one letter).
use std::ffi::OsString;

const ALIASES: &[(&str, &str)] = &[
    ("-ctk", "--cache-type-k"),
    ("-ctv", "--cache-type-v"),
    ("-ub", "--ubatch-size"),
    ("-sys", "--system-prompt"),
    ("-nr", "--no-repack"),
    ("-np", "--parallel"),
    ("-fa", "--flash-attn"),
    ("-ngl", "--n-gpu-layers"),
    ("-ts", "--tensor-split"),
];

/// `args` with every llama.cpp alias (also as `-ctk=q8_0`) replaced.
pub fn expand_llama_aliases(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    args.into_iter()
        .map(|a| {
            let Some(s) = a.to_str() else { return a };
            for (short, long) in ALIASES {
                if s == *short {
                    return OsString::from(*long);
                }
                if let Some(v) = s.strip_prefix(short).and_then(|r| r.strip_prefix('=')) {
                    return OsString::from(format!("{long}={v}"));
                }
            }
            a
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_expand_and_other_args_stay() {
        let args = ["decache", "run", "-ctk", "q8_0", "-ub=64", "-c", "512", "-p", "-ctk"].map(OsString::from);
        let out: Vec<String> = expand_llama_aliases(args).into_iter().map(|s| s.into_string().unwrap()).collect();
        assert_eq!(
            out,
            ["decache", "run", "--cache-type-k", "q8_0", "--ubatch-size=64", "-c", "512", "-p", "--cache-type-k"]
        );
    }
}
