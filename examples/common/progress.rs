//! Progress bars (`indicatif`) for training and sampling. Bars draw on stderr and hide
//! themselves when stderr is not a terminal (logs stay clean).

use indicatif::{ProgressBar, ProgressStyle};

/// A bar of `total` steps (starting at `start`, e.g. after a resume) showing step, the message
/// (set it to the smoothed loss), it/s and ETA.
pub fn bar(prefix: &str, total: u64, start: u64) -> ProgressBar {
    let bar = ProgressBar::new(total).with_position(start).with_prefix(prefix.to_string());
    let template = "{prefix:>8} [{bar:30.cyan/blue}] {pos}/{len} {msg} | {per_sec} | eta {eta}";
    bar.set_style(ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> "));
    bar.reset_eta();
    bar
}
