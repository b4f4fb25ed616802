from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from feedback import services
        from feedback.selection import register_selector
        from training import hooks
        from training.active_learning import SELECTORS

        services.judgment_created_hooks.append(hooks.on_judgment_created)
        services.study_imported_hooks.append(hooks.on_study_imported)
        for name, factory in SELECTORS.items():
            register_selector(name, factory)
        self._connect_warm_up()

    def _connect_warm_up(self) -> None:
        from django.conf import settings
        from django.core.signals import request_started

        from training import warmup

        # Only a process that serves requests ever warms up (see training.warmup); tests turn it off.
        if getattr(settings, "CHORUS_WARM_ON_FIRST_REQUEST", False):
            request_started.connect(warmup.on_first_request, dispatch_uid=warmup.DISPATCH_UID)
