//! The toggles for sound and touch: small components that turn the
//! [`Player`] on and off. Both start off: sound only on a tap (browsers
//! let a page start sound only on a gesture, and nobody wants a page that
//! thumps unasked), the haptic beat only where the phone can vibrate.
//!
//! The player lives in the toggles' reactive owner while anything is on;
//! its scheduling loop holds only a weak handle, so turning everything off
//! or leaving the room drops it, which closes its audio context and
//! cancels its buzzes, and the loop ends on its next round.

use crate::audio::{self, Player};
use crate::i18n::Lang;
use crate::page::Page;
use crate::ui::{pressed, word};
use leptos::prelude::*;
use leptos::task::spawn_local;
use std::cell::RefCell;
use std::rc::Rc;

/// The player, shared by the toggles; `None` while everything is off.
type Shared = StoredValue<Option<Rc<RefCell<Player>>>, LocalStorage>;

/// Runs `change` on the player (made, and its loop started, when needed)
/// and drops it when nothing is left on.
fn change<R>(player: Shared, page: Option<&Page>, change: impl FnOnce(&mut Player) -> R) -> R {
    let shared = player.try_update_value(|slot| {
        slot.get_or_insert_with(|| {
            let made = Rc::new(RefCell::new(Player::default()));
            if let Some(page) = page {
                spawn_local(audio::run(Rc::downgrade(&made), page.clone()));
            }
            made
        })
        .clone()
    });
    let Some(shared) = shared else {
        // The room is gone: an empty player says "off".
        return change(&mut Player::default());
    };
    let (answer, active) = {
        let mut player = shared.borrow_mut();
        let answer = change(&mut player);
        (answer, player.active())
    };
    if !active {
        player.try_update_value(|slot| *slot = None);
    }
    answer
}

/// The sound toggle, and the haptic toggle where the phone can vibrate.
/// Each says whether it is on through `aria-pressed` (which the style
/// shows too), so its name stays the same for screen readers. Their words
/// follow the page's language (the `Lang` signal the `App` puts in context).
#[component]
pub fn FeelToggles() -> impl IntoView {
    let page = use_context::<Page>();
    let lang = use_context::<RwSignal<Lang>>().unwrap_or_else(|| RwSignal::new(Lang::default()));
    let player: Shared = StoredValue::new_local(None);
    let sound = RwSignal::new(false);
    let haptic = RwSignal::new(false);
    let on_sound = {
        let page = page.clone();
        move |_| {
            let on = change(player, page.as_ref(), |p| p.set_sound(!sound.get_untracked()));
            sound.set(on);
        }
    };
    let on_haptic = move |_| {
        let on = !haptic.get_untracked();
        change(player, page.as_ref(), |p| p.set_haptic(on));
        haptic.set(on);
    };
    let vibrates = audio::can_vibrate();
    view! {
        <div class="feel">
            <button
                class="toggle"
                data-testid="sound-toggle"
                aria-pressed=pressed(sound)
                title=word(lang, |t| t.sound_hint)
                on:click=on_sound
            >
                {word(lang, |t| t.sound)}
            </button>
            {vibrates.then(|| view! {
                <button
                    class="toggle"
                    data-testid="haptic-toggle"
                    aria-pressed=pressed(haptic)
                    title=word(lang, |t| t.buzz_hint)
                    on:click=on_haptic
                >
                    {word(lang, |t| t.buzz)}
                </button>
            })}
        </div>
    }
}
