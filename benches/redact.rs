//! Throughput of the redaction engine (`cargo bench --bench redact`).
//!
//! (a) source code without secrets (target >= 1 GB/s per core), (b) config files dense with
//! secrets (target >= 100 MB/s, also checked per rule: a file dense with one rule's matches),
//! (c) one 256 MiB synthetic log, generated in memory, (d) per-file cost over 10k small files.

use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use veilfs::testing::samples::{Rng, cases, generate};
use veilfs::{Engine, ScanOutcome};

mod corpus;
use corpus::{dense_config, source_code};

fn log_file(size: usize) -> Vec<u8> {
    let mut rng = Rng::new(3);
    let mut s = Vec::with_capacity(size + 512);
    let levels = ["INFO", "DEBUG", "WARN", "INFO", "ERROR"];
    let paths = [
        "/api/v1/orders",
        "/healthz",
        "/api/v1/users/me",
        "/static/app.js",
        "/login",
    ];
    let mut n = 0u64;
    while s.len() < size {
        n += 1;
        let line = if n.is_multiple_of(20_000) {
            format!(
                "2026-03-01T12:00:00Z WARN leaked config: GITHUB_TOKEN={}\n",
                generate("ghp_{A:36}", &mut rng)
            )
        } else {
            format!(
                "2026-03-01T{:02}:{:02}:{:02}.{:03}Z {} req={} method=GET path={} status={} dur_ms={} ua=\"Mozilla/5.0 (X11; Linux x86_64)\"\n",
                rng.below(24),
                rng.below(60),
                rng.below(60),
                rng.below(1000),
                levels[rng.below(5) as usize],
                generate("{H:8}-{H:4}-4{H:3}-a{H:3}-{H:12}", &mut rng),
                paths[rng.below(5) as usize],
                [200, 200, 304, 404, 500][rng.below(5) as usize],
                rng.below(900),
            )
        };
        s.extend_from_slice(line.as_bytes());
    }
    s.truncate(size);
    s
}

fn small_files() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(11);
    let all = cases(1);
    (0..10_000usize)
        .map(|i| {
            let mut body = source_code(1000 + rng.below(3000) as usize);
            if i.is_multiple_of(10) {
                let c = &all[i / 10 % all.len()];
                body.extend_from_slice(c.positive.as_bytes());
                body.push(b'\n');
            }
            (format!("src/mod{i}/file{i}.rs"), body)
        })
        .collect()
}

/// Prints the slowest rules on files dense with their own matches (100 MB/s floor).
fn per_rule_floor(engine: &Engine) {
    let mut rows = Vec::new();
    for c in cases(1) {
        let data = corpus::dense_for_rule(c.rule_id);
        let t = Instant::now();
        let mut iters = 0;
        while t.elapsed() < Duration::from_millis(30) || iters < 3 {
            black_box(engine.scan(Path::new(c.path), &data));
            iters += 1;
        }
        let mbs = (data.len() * iters) as f64 / t.elapsed().as_secs_f64() / 1e6;
        rows.push((mbs, c.rule_id));
    }
    rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    eprintln!("per-rule dense files (1 MiB each, a secret every 5 lines), slowest first:");
    for (mbs, id) in rows.iter().take(8) {
        eprintln!("  {id:<34} {mbs:>8.0} MB/s");
    }
}

fn benches(c: &mut Criterion) {
    let all = Engine::load(&["secrets".into(), "pii".into()], &[]).expect("rules");
    let secrets = Engine::load(&["secrets".into()], &[]).expect("rules");
    // The machine is shared: a one-rule engine costs about one keyword pass, so its number in
    // the same run says how much of the others' time is the machine's load.
    let one = corpus::one_rule_engine();
    if std::env::var_os("VEILFS_BENCH_PER_RULE").is_some() {
        per_rule_floor(&all);
    }

    let code = source_code(16 << 20);
    assert!(matches!(
        all.scan(Path::new("src/lib.rs"), &code),
        ScanOutcome::Clean
    ));
    let mut g = c.benchmark_group("a_source_code_clean");
    g.throughput(Throughput::Bytes(code.len() as u64));
    g.sample_size(20);
    g.bench_function("one-rule", |b| {
        b.iter(|| one.scan(Path::new("src/lib.rs"), black_box(&code)))
    });
    g.bench_function("secrets", |b| {
        b.iter(|| secrets.scan(Path::new("src/lib.rs"), black_box(&code)))
    });
    g.bench_function("secrets+pii", |b| {
        b.iter(|| all.scan(Path::new("src/lib.rs"), black_box(&code)))
    });
    g.finish();

    let conf = dense_config(4 << 20);
    let mut g = c.benchmark_group("b_config_dense");
    g.throughput(Throughput::Bytes(conf.len() as u64));
    g.sample_size(10);
    g.bench_function("secrets+pii", |b| {
        b.iter(|| all.scan(Path::new("deploy/app.env"), black_box(&conf)))
    });
    g.finish();

    let log = log_file(256 << 20);
    let mut g = c.benchmark_group("c_log_256MiB");
    g.throughput(Throughput::Bytes(log.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("secrets+pii", |b| {
        b.iter(|| all.scan(Path::new("logs/app.log"), black_box(&log)))
    });
    g.finish();
    drop(log);

    let files = small_files();
    let bytes: usize = files.iter().map(|f| f.1.len()).sum();
    let mut g = c.benchmark_group("d_10k_small_files");
    g.throughput(Throughput::Elements(files.len() as u64));
    g.sample_size(10);
    eprintln!("d: {} files, {} bytes total", files.len(), bytes);
    g.bench_function("secrets+pii", |b| {
        b.iter(|| {
            for (p, d) in &files {
                black_box(all.scan(Path::new(p), d));
            }
        })
    });
    g.finish();

    // Binaries are scanned through their printable runs: executables from /usr/bin, concatenated
    // up to 32 MiB (skipped where there are none).
    let bin = usr_bin(32 << 20);
    if bin.len() >= 1 << 20 {
        eprintln!(
            "e: {} bytes of /usr/bin, outcome {:?}",
            bin.len(),
            match all.scan(Path::new("bin/x"), &bin) {
                ScanOutcome::Clean => "clean".to_string(),
                ScanOutcome::Redact(r) => format!("{} spans", r.spans().len()),
                ScanOutcome::Unscannable(why) => why.to_string(),
                ScanOutcome::Refused(why) => why.to_string(),
            }
        );
        let mut g = c.benchmark_group("e_binary_usr_bin");
        g.throughput(Throughput::Bytes(bin.len() as u64));
        g.sample_size(10);
        g.bench_function("secrets+pii", |b| {
            b.iter(|| all.scan(Path::new("bin/x"), black_box(&bin)))
        });
        g.finish();
    }
}

/// Executables from /usr/bin, concatenated up to `max` bytes (an ELF header first).
fn usr_bin(max: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/usr/bin") else {
        return out;
    };
    let mut paths: Vec<_> = dir.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for p in paths {
        if out.len() >= max {
            break;
        }
        if let Ok(d) = std::fs::read(&p)
            && d.starts_with(b"\x7fELF")
        {
            out.extend_from_slice(&d[..d.len().min(max - out.len())]);
        }
    }
    out
}

criterion_group!(redact, benches);
criterion_main!(redact);
