from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView


class FaviconRedirect(RedirectView):
    """Browsers ask for /favicon.ico whatever the page links; send them to the static SVG.

    The URL is resolved per request, not at import: a manifest storage (production) knows the hashed
    name only once collectstatic has run.
    """

    permanent = False

    def get_redirect_url(self, *args, **kwargs) -> str:
        return static("favicon.svg")


urlpatterns = [
    path("", RedirectView.as_view(url="/studies/", permanent=False)),
    path("favicon.ico", FaviconRedirect.as_view()),
    path("admin/", admin.site.urls),
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    # The split view serves Swagger UI's init script as a file: no inline script for the CSP to block.
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
    # Each app's whole API in one file; names "api-…", no namespace (see feedback/api_urls.py).
    path("api/v1/", include("feedback.api_urls")),
    path("api/v1/", include("training.api_urls")),
    path("", include("training.urls")),
    path("", include("feedback.urls")),
]
