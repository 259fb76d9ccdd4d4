# syntax=docker/dockerfile:1
# The silo image. Build from the repository root:
#   docker build -f deploy/docker/Silo.Dockerfile -t orleanspush/silo .
FROM mcr.microsoft.com/dotnet/sdk:10.0 AS build
WORKDIR /src
# Restore first, from the project files alone, so that a code change does not invalidate the package layer.
COPY global.json Directory.Build.props Directory.Packages.props .editorconfig ./
COPY Grains.Interfaces/Grains.Interfaces.csproj Grains.Interfaces/
COPY Hosting/Hosting.csproj Hosting/
COPY Grains/Grains.csproj Grains/
COPY Silo/Silo.csproj Silo/
RUN dotnet restore Silo/Silo.csproj
COPY Grains.Interfaces/ Grains.Interfaces/
COPY Hosting/ Hosting/
COPY Grains/ Grains/
COPY Silo/ Silo/
RUN dotnet publish Silo/Silo.csproj -c Release --no-restore -o /app

# The same base as the gateway's, so that nodes pull one base layer for both.
FROM mcr.microsoft.com/dotnet/aspnet:10.0 AS final
WORKDIR /app
COPY --from=build /app ./
ENV DOTNET_gcServer=1
# Silo-to-silo and client gateway ports (OrleansPush:Cluster:SiloPort / GatewayPort), and the dashboard's HTTP port
# (OrleansPush:Dashboard:Port; it listens only when that is set, on loopback unless BindAddress says otherwise).
EXPOSE 11111 30000 8081
# The non-root user that the .NET images ship (uid 1654).
USER $APP_UID
ENTRYPOINT ["dotnet", "OrleansPush.Silo.dll"]
