//! The page's words, in English and in Chinese (the seed articles'
//! readers), all in one place per language: [`EN`] and [`ZH`]. Which one a
//! page shows is [`Lang::pick`]ed from what the person chose before (kept in
//! localStorage under [`LANG_KEY`]) or else from the browser's preferred
//! languages (`navigator.languages`, which is what the browser sends as
//! `Accept-Language`). Pure, so it is tested natively.

use shared::client::Link;

/// The localStorage key of the language the person chose with the toggle.
pub const LANG_KEY: &str = "heartsync.lang";

/// A language the page speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Lang {
    /// English, for everyone whose browser prefers no Chinese.
    #[default]
    En,
    /// Simplified Chinese.
    Zh,
}

impl Lang {
    /// The BCP 47 tag for `<html lang>` and for what is stored.
    pub fn tag(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Zh => "zh-CN",
        }
    }

    /// The language of a tag such as `zh-Hans-CN` or `en-GB`, if the page
    /// speaks it.
    pub fn from_tag(tag: &str) -> Option<Lang> {
        let primary = tag.trim().split(['-', '_']).next().unwrap_or_default();
        if primary.eq_ignore_ascii_case("zh") {
            Some(Lang::Zh)
        } else if primary.eq_ignore_ascii_case("en") {
            Some(Lang::En)
        } else {
            None
        }
    }

    /// The language to show: the stored choice when it names one, else the
    /// first of the browser's `preferred` languages that the page speaks,
    /// else English.
    pub fn pick<S: AsRef<str>>(stored: Option<&str>, preferred: &[S]) -> Lang {
        stored
            .and_then(Lang::from_tag)
            .or_else(|| preferred.iter().find_map(|tag| Lang::from_tag(tag.as_ref())))
            .unwrap_or_default()
    }

    /// The other language: what the toggle switches to.
    pub fn other(self) -> Lang {
        match self {
            Lang::En => Lang::Zh,
            Lang::Zh => Lang::En,
        }
    }

    /// Every word of the page in this language.
    pub fn text(self) -> &'static Text {
        match self {
            Lang::En => &EN,
            Lang::Zh => &ZH,
        }
    }
}

/// Every fixed word of the page in one language. A field per place on the
/// page, so a missing translation is a compile error.
#[derive(Debug)]
pub struct Text {
    /// The document's title.
    pub title: &'static str,
    /// The label over the number of hearts in the room.
    pub hearts: &'static str,
    /// The label over how in step the room is.
    pub in_sync: &'static str,
    /// The label over the room's love total.
    pub love: &'static str,
    /// The love button.
    pub send_love: &'static str,
    /// The love button's tooltip (its keys).
    pub send_love_hint: &'static str,
    /// The canvas's text alternative.
    pub canvas_label: &'static str,
    /// The status line while a socket opens.
    pub connecting: &'static str,
    /// The status line once the server welcomed the page.
    pub connected: &'static str,
    /// The status line while waiting to reconnect (no countdown: it is
    /// also what a screen reader hears).
    pub reconnecting: &'static str,
    /// The status line while waiting, with its countdown: `{}` is the
    /// seconds.
    pub reconnect_in: &'static str,
    /// The share button.
    pub share: &'static str,
    /// What the share button says once the link is on the clipboard.
    pub copied: &'static str,
    /// The button that shows the QR code.
    pub show_qr: &'static str,
    /// The QR code's text alternative.
    pub qr_label: &'static str,
    /// The note under the QR code.
    pub qr_hint: &'static str,
    /// The language toggle's own label, in the language it switches *to*.
    pub switch_to: &'static str,
    /// The language toggle's accessible name.
    pub switch_label: &'static str,
    /// The screen-reader summary of the room; `{hearts}`, `{sync}` and
    /// `{love}` are replaced.
    pub summary: &'static str,
    /// The link back to the main room from a page with a bad room name.
    pub open_main: &'static str,
    /// What a page with a bad room name says first (the reason follows, as
    /// the room name's parser words it).
    pub bad_room: &'static str,
    /// The sound toggle.
    pub sound: &'static str,
    /// The sound toggle's tooltip.
    pub sound_hint: &'static str,
    /// The haptic toggle (on phones that vibrate).
    pub buzz: &'static str,
    /// The haptic toggle's tooltip.
    pub buzz_hint: &'static str,
    /// The coherence strip's text alternative until its history arrives.
    pub history_loading: &'static str,
    /// The strip's text alternative when the room has no history yet.
    pub history_empty: &'static str,
    /// The strip's text alternative: `{minutes}`, `{trend}`, `{now}` and
    /// `{average}` are replaced (see [`crate::history::describe`]).
    pub history: &'static str,
    /// The trend when the last ten minutes are in step more than the ten
    /// before them.
    pub rising: &'static str,
    /// The trend when they are in step less.
    pub falling: &'static str,
    /// The trend when they are about the same.
    pub steady: &'static str,
    /// The trend when there are not yet twenty minutes to compare.
    pub no_trend: &'static str,
}

/// English.
pub const EN: Text = Text {
    title: "heartsync",
    hearts: "hearts",
    in_sync: "in sync",
    love: "love",
    send_love: "♥ send love",
    send_love_hint: "send love (l or space)",
    canvas_label: "A heart beating in time with everyone in this room",
    connecting: "connecting…",
    connected: "connected",
    reconnecting: "connection lost: reconnecting",
    reconnect_in: "connection lost: reconnecting in {} s",
    share: "share",
    copied: "link copied",
    show_qr: "QR code",
    qr_label: "QR code of this room's link",
    qr_hint: "Scan to join this room",
    switch_to: "中文",
    switch_label: "切换到中文 (switch to Chinese)",
    summary: "{hearts} hearts, {sync}% in sync, {love} love",
    open_main: "Open the main room",
    bad_room: "This room cannot be opened:",
    sound: "♪ sound",
    sound_hint: "hear the beat",
    buzz: "≋ buzz",
    buzz_hint: "feel the beat",
    history_loading: "Coherence history loading",
    history_empty: "No coherence history for this room in the last hour yet.",
    history: "Coherence over the last {minutes} min: {trend}; now {now}%, average {average}%.",
    rising: "rising",
    falling: "falling",
    steady: "steady",
    no_trend: "too little history for a trend",
};

/// Simplified Chinese.
pub const ZH: Text = Text {
    title: "心跳同步 heartsync",
    hearts: "心跳",
    in_sync: "同步",
    love: "爱心",
    send_love: "♥ 送出爱心",
    send_love_hint: "送出爱心（l 或空格）",
    canvas_label: "一颗与房间里所有人同步跳动的心",
    connecting: "正在连接…",
    connected: "已连接",
    reconnecting: "连接中断：正在重连",
    reconnect_in: "连接中断：{} 秒后重连",
    share: "分享",
    copied: "链接已复制",
    show_qr: "二维码",
    qr_label: "本房间链接的二维码",
    qr_hint: "扫码加入这个房间",
    switch_to: "English",
    switch_label: "Switch to English (切换到英文)",
    summary: "{hearts} 颗心，{sync}% 同步，{love} 份爱心",
    open_main: "打开主房间",
    bad_room: "无法打开这个房间：",
    sound: "♪ 声音",
    sound_hint: "听见心跳",
    buzz: "≋ 振动",
    buzz_hint: "感受心跳",
    history_loading: "同步历史加载中",
    history_empty: "这个房间最近一小时还没有同步历史。",
    history: "最近 {minutes} 分钟的同步程度：{trend}；现在 {now}%，平均 {average}%。",
    rising: "正在上升",
    falling: "正在下降",
    steady: "保持平稳",
    no_trend: "历史太短，还看不出趋势",
};

impl Text {
    /// The connection's state in a few words, without a countdown: what a
    /// screen reader announces when it changes.
    pub fn link_state(&self, link: &Link) -> &'static str {
        match link {
            Link::Connecting => self.connecting,
            Link::Connected => self.connected,
            Link::Waiting { .. } => self.reconnecting,
        }
    }

    /// The visible status line at local time `now`: the state, and while
    /// waiting, the seconds until the next attempt.
    pub fn status(&self, link: &Link, now: f64) -> String {
        match link {
            Link::Waiting { until, .. } => {
                // A whole number of seconds, at least one (as an integer:
                // see `history::colour` on float precision).
                let seconds = ((until - now) / 1000.0).ceil().max(1.0) as u64;
                self.reconnect_in.replace("{}", &seconds.to_string())
            }
            other => self.link_state(other).to_owned(),
        }
    }

    /// The summary a screen reader hears now and then.
    pub fn summary(&self, hearts: Option<u32>, sync_percent: u32, love: u64) -> String {
        let hearts = hearts.map_or_else(|| String::from("–"), |h| h.to_string());
        self.summary
            .replace("{hearts}", &hearts)
            .replace("{sync}", &sync_percent.to_string())
            .replace("{love}", &love.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_choice_wins_over_the_browser() {
        assert_eq!(Lang::pick(Some("zh-CN"), &["en-US"]), Lang::Zh);
        assert_eq!(Lang::pick(Some("en"), &["zh-CN", "zh"]), Lang::En);
    }

    #[test]
    fn the_first_spoken_preferred_language_wins() {
        assert_eq!(Lang::pick(None, &["zh-Hans-CN", "en"]), Lang::Zh);
        assert_eq!(Lang::pick(None, &["zh_TW"]), Lang::Zh);
        assert_eq!(Lang::pick(None, &["fr-FR", "en-GB", "zh"]), Lang::En);
        assert_eq!(Lang::pick(None, &["de", "ZH"]), Lang::Zh);
    }

    #[test]
    fn english_when_nothing_matches() {
        assert_eq!(Lang::pick::<&str>(None, &[]), Lang::En);
        assert_eq!(Lang::pick(Some("garbage"), &["fr", "ja"]), Lang::En);
        assert_eq!(Lang::pick(Some(""), &[""]), Lang::En);
    }

    #[test]
    fn the_toggle_switches_back_and_forth() {
        assert_eq!(Lang::En.other(), Lang::Zh);
        assert_eq!(Lang::Zh.other().other(), Lang::Zh);
        for lang in [Lang::En, Lang::Zh] {
            assert_eq!(Lang::from_tag(lang.tag()), Some(lang));
        }
    }

    #[test]
    fn the_status_line_counts_down_in_each_language() {
        let waiting = Link::Waiting { until: 3500.0, reason: String::from("no answer") };
        assert_eq!(EN.status(&waiting, 1000.0), "connection lost: reconnecting in 3 s");
        assert_eq!(ZH.status(&waiting, 1000.0), "连接中断：3 秒后重连");
        assert_eq!(EN.status(&Link::Connected, 0.0), "connected");
        assert_eq!(ZH.status(&Link::Connecting, 0.0), "正在连接…");
        assert_eq!(EN.link_state(&waiting), "connection lost: reconnecting");
    }

    #[test]
    fn the_summary_names_every_count() {
        assert_eq!(EN.summary(Some(3), 87, 12), "3 hearts, 87% in sync, 12 love");
        assert_eq!(ZH.summary(None, 0, 0), "– 颗心，0% 同步，0 份爱心");
    }

    #[test]
    fn no_word_is_missing_or_left_untranslated() {
        for (en, zh) in [
            (EN.hearts, ZH.hearts),
            (EN.send_love, ZH.send_love),
            (EN.connected, ZH.connected),
            (EN.share, ZH.share),
            (EN.qr_hint, ZH.qr_hint),
            (EN.canvas_label, ZH.canvas_label),
            (EN.sound, ZH.sound),
            (EN.buzz_hint, ZH.buzz_hint),
            (EN.history, ZH.history),
            (EN.no_trend, ZH.no_trend),
        ] {
            assert!(!en.is_empty() && !zh.is_empty());
            assert_ne!(en, zh);
        }
    }
}
