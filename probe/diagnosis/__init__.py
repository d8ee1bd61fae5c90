"""Why a hotline failed, in the terms people act on: the cause rules across channels
(``rules``), each target's verdict history (``history``) and the translated texts (``i18n``)."""
