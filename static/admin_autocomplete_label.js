"use strict";
// The admin's autocomplete boxes (select2) do not carry their form label over to the box they draw,
// so a screen reader hears an unnamed combobox (WCAG 4.1.2). Name each one after its <label>.
// Loaded after the widget's own media, so it runs once select2 has drawn the boxes.
django.jQuery(function ($) {
    $("select.admin-autocomplete").each(function () {
        const label = this.id ? document.querySelector('label[for="' + this.id + '"]') : null;
        if (!label) {
            return;
        }
        const name = label.textContent.replace(/:\s*$/, "").trim();
        $(this).next(".select2").find(".select2-selection, .select2-selection__rendered").attr("aria-label", name);
    });
});
