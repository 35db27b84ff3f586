"""Routes: Django's login and logout, and one view per hubbub proxy."""

from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path

from examples.django_backend import views

urlpatterns = [
    path("accounts/login/", auth_views.LoginView.as_view(), name="login"),
    path("accounts/logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", views.home, name="home"),
    path("centrifugo/connect", views.connect, name="proxy-connect"),
    path("centrifugo/subscribe", views.subscribe, name="proxy-subscribe"),
    path("centrifugo/publish", views.publish, name="proxy-publish"),
    path("centrifugo/rpc", views.rpc, name="proxy-rpc"),
]
