from django.urls import path

from . import views

urlpatterns = [
    path("healthz", views.healthz),
    path("json", views.json_view),
    path("form", views.form),
    path("upload", views.upload),
    path("stream", views.stream),
]
