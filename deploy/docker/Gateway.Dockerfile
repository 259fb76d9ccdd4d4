# syntax=docker/dockerfile:1
# The gateway image. Build from the repository root:
#   docker build -f deploy/docker/Gateway.Dockerfile -t orleanspush/gateway .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore first, from the project files alone, so that a code change does not invalidate the package layer.
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY Grains.Interfaces/Grains.Interfaces.csproj Grains.Interfaces/
COPY Hosting/Hosting.csproj Hosting/
COPY Grains/Grains.csproj Grains/
COPY Client/Client.csproj Client/
COPY Gateway/Gateway.csproj Gateway/
RUN dotnet restore Gateway/Gateway.csproj
COPY Grains.Interfaces/ Grains.Interfaces/
COPY Hosting/ Hosting/
COPY Grains/ Grains/
COPY Client/ Client/
COPY Gateway/ Gateway/
RUN dotnet publish Gateway/Gateway.csproj -c Release --no-restore -o /app

FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS final
WORKDIR /app
COPY --from=build /app ./
# Listen on every interface inside the container (the shipped appsettings.json says localhost:5000 and MQTT on
# 127.0.0.1, for development); the Kubernetes manifest binds MQTT to the pod's address.
ENV URLS=http://+:8080 \
    OrleansPush__Mqtt__BindAddress=0.0.0.0 \
    DOTNET_gcServer=1
EXPOSE 8080
# The non-root user that the .NET images ship (uid 1654).
USER $APP_UID
ENTRYPOINT ["dotnet", "OrleansPush.Gateway.dll"]
