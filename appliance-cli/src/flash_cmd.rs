//! `appliance flash`: argument handling and progress around the `flash` crate.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::bail;
use flash::{Host, Options, Phase};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::sign_cmd::read_public_key;
use crate::Outcome;

#[derive(Debug, clap::Args)]
pub struct FlashArgs {
    /// Output directory of `appliance build` (disk.img, disk.img.bmap, manifest.json, manifest.sig).
    outdir: PathBuf,
    /// The whole disk to overwrite (e.g. /dev/sdb).
    device: PathBuf,
    /// Public key (NAME.pub) the manifest must be signed with.
    #[arg(long)]
    pubkey: PathBuf,
    /// Accept a disk the kernel does not call removable (check it is the right one).
    #[arg(long)]
    yes: bool,
}

pub fn flash(args: FlashArgs, json: bool) -> anyhow::Result<Outcome> {
    let key = read_public_key(&args.pubkey)?;
    if !args.outdir.is_dir() {
        bail!(
            "{}: not an output directory of `appliance build`",
            args.outdir.display()
        );
    }
    let release = flash::Release::open(&args.outdir, &key)?;
    let host = Host::system();
    let cancel = Arc::new(AtomicBool::new(false));
    for sig in [
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register(sig, Arc::clone(&cancel))?;
    }
    let show = !json && std::io::stderr().is_terminal();
    if !json {
        eprintln!(
            "flashing {} onto {} (signed by {})",
            release.label,
            args.device.display(),
            release.signer.as_deref().unwrap_or("-")
        );
    }
    let bar = if show {
        ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr())
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "{msg:>14} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut phase = None;
    let mut on_progress = |p: flash::Progress| {
        if phase != Some(p.phase) {
            phase = Some(p.phase);
            bar.reset();
            bar.set_length(p.total);
            bar.set_message(match p.phase {
                Phase::CheckingImage => "checking image",
                Phase::Writing => "writing",
                Phase::Verifying => "verifying",
                Phase::Finishing => "writing GPT",
            });
        }
        bar.set_position(p.done);
    };
    let r = flash::flash(
        &release,
        &args.device,
        &host,
        &Options {
            yes: args.yes,
            max_held_bytes: None,
        },
        &mut on_progress,
        &cancel,
    );
    bar.finish_and_clear();
    let report = r?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"ok": true, "flash": report}))?
        );
    } else {
        let mib = report.written_bytes as f64 / (1 << 20) as f64;
        println!(
            "flashed {} onto {} ({}, {} bytes): {mib:.1} MiB in {} ranges written{} and read back, all matching the signed block map, in {:.1} s ({:.0} MiB/s)",
            report.release,
            report.device.path.display(),
            report.device.description,
            report.device.size,
            report.ranges,
            if report.direct_io { " with O_DIRECT" } else { " (buffered, flushed)" },
            report.seconds,
            mib / report.seconds.max(1e-9),
        );
        if report.cleared_device_end {
            println!(
                "the device is {} bytes larger than the image: its last sectors (a stale backup GPT) were cleared",
                report.device.size - report.image_size
            );
        }
    }
    Ok(Outcome::Ok)
}
