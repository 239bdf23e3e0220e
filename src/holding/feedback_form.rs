//! The "report a problem" form, built once per language and shared by the
//! holding page (`{{feedback_form}}`, where the polling script sends it
//! without leaving the page) and usher's own pages for origin failures
//! (where it posts as a plain form and the visitor gets a receipt page).

use std::sync::OnceLock;

use super::i18n::{Lang, Strings};

/// The form's HTML in the language of `strings` (the texts are ours; no
/// visitor value enters it).
pub(crate) fn feedback_form(strings: &Strings) -> &'static str {
    static FORMS: OnceLock<[String; 2]> = OnceLock::new();
    let forms = FORMS.get_or_init(|| Lang::ALL.map(build));
    let lang = Lang::from_tag(strings.lang).unwrap_or(Lang::Ko);
    &forms[lang as usize]
}

fn build(lang: Lang) -> String {
    let s = lang.strings();
    let t = s.talk;
    format!(
        "<details class=\"card fb\"><summary>{summary}</summary>\n\
         <form id=\"u-fbf\" method=\"post\" action=\"/__usher/feedback\">\n\
         <input type=\"hidden\" name=\"lang\" value=\"{lang}\">\n\
         <label>{category} <select name=\"category\">\n\
         <option value=\"cant_get_in\">{cant}</option>\n\
         <option value=\"page_error\">{page}</option>\n\
         <option value=\"voucher\">{voucher}</option>\n\
         <option value=\"other\">{other}</option>\n\
         </select></label>\n\
         <label>{text}<textarea name=\"text\" maxlength=\"500\" rows=\"3\" required></textarea></label>\n\
         <button class=\"btn\" type=\"submit\">{send}</button>\n\
         <p id=\"u-fbr\" role=\"status\"></p>\n\
         </form>\n</details>",
        summary = t.t_feedback,
        lang = lang.as_str(),
        category = t.t_fb_category,
        cant = t.t_fb_cant_get_in,
        page = t.t_fb_page_error,
        voucher = t.t_fb_voucher,
        other = t.t_fb_other,
        text = t.t_fb_text,
        send = t.t_fb_send,
    )
}
