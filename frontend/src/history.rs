//! The coherence strip under the heart: the room's last hour from
//! `/api/rooms/{room}/history`, one cell per 10 s, coloured by mean
//! coherence, and a sentence that says the trend for screen readers (in the
//! page's language, from [`Text`]). Pure, tested natively; the page fetches
//! and draws.

use crate::i18n::Text;
use serde::Deserialize;

/// How many cells the strip has: an hour of 10-second buckets.
pub const CELLS: usize = 360;

/// The width of one bucket, in ms.
pub const BUCKET_MS: f64 = 10_000.0;

/// How often the page fetches the history again, in ms.
pub const REFRESH_MS: u32 = 60_000;

/// One bucket as the server sends it (fields the strip does not use are
/// ignored).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Bucket {
    /// When the bucket starts (server clock, ms, a multiple of 10 000).
    pub start: f64,
    /// The mean coherence over the bucket.
    pub coherence_mean: f64,
}

/// The endpoint's answer.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct History {
    /// The buckets, oldest first; a bucket when the room was closed is absent.
    pub buckets: Vec<Bucket>,
}

impl History {
    /// Parses the endpoint's JSON.
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// The history endpoint of `room`, relative to the page.
pub fn url(room: &shared::RoomName) -> String {
    format!("/api/rooms/{room}/history?minutes=60")
}

/// The strip's cells, oldest first, the last one holding `now_ms` (server
/// clock): each the mean coherence of its bucket, or `None` where the room
/// has no bucket.
pub fn cells(history: &History, now_ms: f64) -> Vec<Option<f64>> {
    let last = (now_ms / BUCKET_MS).floor();
    let first = last - (CELLS as f64 - 1.0);
    let mut cells = vec![None; CELLS];
    for bucket in &history.buckets {
        let index = (bucket.start / BUCKET_MS).floor() - first;
        if (0.0..CELLS as f64).contains(&index) {
            cells[index as usize] = Some(bucket.coherence_mean.clamp(0.0, 1.0));
        }
    }
    cells
}

/// A cell's colour: from a cool blue-grey (out of step) to the heart's warm
/// red (in step); absent buckets are drawn faint.
pub fn colour(cell: Option<f64>) -> String {
    match cell {
        None => String::from("rgba(255,255,255,0.06)"),
        Some(c) => {
            // Whole numbers, rounded here: formatting a float with a
            // precision (`{:.0}`) would bring its exact-decimal code into
            // the bundle for this alone.
            let whole = |x: f64| x.round() as u32;
            let hue = whole(220.0 - 220.0 * c); // 220 (blue) .. 0 (red), via violet
            let saturation = whole(30.0 + 55.0 * c);
            let lightness = whole(35.0 + 20.0 * c);
            format!("hsl({hue},{saturation}%,{lightness}%)")
        }
    }
}

/// The text alternative, in the words of `text`: how in sync the room has
/// been, and where it is going.
pub fn describe(history: &History, text: &Text) -> String {
    let means: Vec<f64> =
        history.buckets.iter().map(|b| b.coherence_mean.clamp(0.0, 1.0)).collect();
    let Some(&now) = means.last() else {
        return text.history_empty.to_owned();
    };
    let percent = |x: f64| ((x * 100.0).round() as u32).to_string();
    let average = means.iter().sum::<f64>() / means.len() as f64;
    // The trend: the last ten minutes against the ten before them.
    let recent = mean(means.iter().rev().take(60)).unwrap_or(now);
    let before = mean(means.iter().rev().skip(60).take(60));
    let trend = match before {
        None => text.no_trend,
        Some(before) if recent - before > 0.1 => text.rising,
        Some(before) if before - recent > 0.1 => text.falling,
        Some(_) => text.steady,
    };
    let minutes = (means.len() as f64 * BUCKET_MS / 60_000.0).ceil() as u32;
    text.history
        .replace("{minutes}", &minutes.to_string())
        .replace("{trend}", trend)
        .replace("{now}", &percent(now))
        .replace("{average}", &percent(average))
}

fn mean<'a>(values: impl Iterator<Item = &'a f64>) -> Option<f64> {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    (n > 0).then(|| sum / n as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::i18n::{EN, ZH};

    const NOW: f64 = 1_700_000_005_000.0; // 5 s into a bucket

    fn history(means: &[f64]) -> History {
        let last = (NOW / BUCKET_MS).floor() * BUCKET_MS;
        let n = means.len();
        let buckets = means
            .iter()
            .enumerate()
            .map(|(i, &m)| Bucket {
                start: last - (n - 1 - i) as f64 * BUCKET_MS,
                coherence_mean: m,
            })
            .collect();
        History { buckets }
    }

    #[test]
    fn the_last_cell_is_now_and_gaps_stay_empty() {
        let mut h = history(&[0.2, 0.4]);
        h.buckets.remove(0);
        h.buckets.push(Bucket { start: NOW - 3_600_000.0 - BUCKET_MS, coherence_mean: 1.0 });
        let cells = cells(&h, NOW);
        assert_eq!(cells.len(), CELLS);
        assert_eq!(cells[CELLS - 1], Some(0.4));
        assert_eq!(cells[CELLS - 2], None);
        assert_eq!(cells.iter().flatten().count(), 1, "a bucket older than an hour is not shown");
    }

    #[test]
    fn colours_run_from_cool_to_warm() {
        assert_eq!(colour(Some(0.0)), "hsl(220,30%,35%)");
        assert_eq!(colour(Some(1.0)), "hsl(0,85%,55%)");
        assert!(colour(None).starts_with("rgba"));
    }

    #[test]
    fn the_text_says_the_trend() {
        let rising: Vec<f64> = (0..120).map(|i| if i < 60 { 0.2 } else { 0.8 }).collect();
        assert_eq!(
            describe(&history(&rising), &EN),
            "Coherence over the last 20 min: rising; now 80%, average 50%."
        );
        let falling: Vec<f64> = rising.iter().rev().copied().collect();
        assert!(describe(&history(&falling), &EN).contains("falling"));
        assert!(describe(&history(&[0.5; 130]), &EN).contains("steady"));
        assert!(describe(&history(&[0.5; 3]), &EN).contains("too little history"));
        assert!(describe(&History { buckets: vec![] }, &EN).starts_with("No coherence history"));
    }

    #[test]
    fn the_text_says_the_trend_in_chinese_too() {
        let rising: Vec<f64> = (0..120).map(|i| if i < 60 { 0.2 } else { 0.8 }).collect();
        assert_eq!(
            describe(&history(&rising), &ZH),
            "最近 20 分钟的同步程度：正在上升；现在 80%，平均 50%。"
        );
        let falling: Vec<f64> = rising.iter().rev().copied().collect();
        assert!(describe(&history(&falling), &ZH).contains("正在下降"));
        assert!(describe(&history(&[0.5; 130]), &ZH).contains("保持平稳"));
        assert_eq!(describe(&History { buckets: vec![] }, &ZH), ZH.history_empty);
    }

    #[test]
    fn the_endpoints_json_parses() {
        let json = r#"{"room":"main","bucket_seconds":10,"buckets":[{"start":1700000000000.0,"coherence_min":0.1,"coherence_mean":0.5,"coherence_max":0.9,"hearts":2,"love_added":0}]}"#;
        let h = History::parse(json).expect("parses");
        assert_eq!(h.buckets, vec![Bucket { start: 1_700_000_000_000.0, coherence_mean: 0.5 }]);
    }
}
