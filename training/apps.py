from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from feedback import services
        from feedback.selection import register_selector
        from training import hooks
        from training.selection import SELECTORS

        services.judgment_created_hooks.append(hooks.on_judgment_created)
        services.study_imported_hooks.append(hooks.on_study_imported)
        for name, factory in SELECTORS.items():
            register_selector(name, factory)
