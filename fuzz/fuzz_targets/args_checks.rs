//! Every built-in kind's args check on JSON from outside: the first byte picks the kind,
//! the rest is the args. A check must answer (accept or name the field), never panic.
#![no_main]

use std::sync::{Arc, OnceLock};

use libfuzzer_sys::fuzz_target;
use spindle::jobs::registry::JobKind;

/// The built-in kinds (over a scratch files directory) and a runtime for their async
/// checks, made once.
fn checkers() -> &'static (Vec<Arc<JobKind>>, tokio::runtime::Runtime) {
    static CHECKERS: OnceLock<(Vec<Arc<JobKind>>, tokio::runtime::Runtime)> = OnceLock::new();
    CHECKERS.get_or_init(|| {
        let dir = std::env::temp_dir().join("spindle-fuzz-files");
        std::fs::create_dir_all(&dir).expect("scratch dir");
        let files = spindle::jobs::files::FilesDir::open(&dir).expect("files dir");
        let registry = spindle::jobs::builtins(files, Default::default());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        (registry.kinds().cloned().collect(), runtime)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = data.split_first() else {
        return;
    };
    let Ok(args) = serde_json::from_slice::<serde_json::Value>(rest) else {
        return;
    };
    let (kinds, runtime) = checkers();
    let kind = &kinds[*pick as usize % kinds.len()];
    let _ = runtime.block_on(kind.validate(&args));
});
